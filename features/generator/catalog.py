"""The catalog: named categories, log-normal prices, long-tail popularity, launches and bundles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from features.generator.calendar import NS_PER_DAY
from features.generator.ids import make_ids

# name, median price, staple (bought again and again), nouns for product names
CATEGORIES: tuple[tuple[str, float, bool, tuple[str, ...]], ...] = (
    ("Kitchen", 18.0, False, ("Mug", "Teapot", "Pan", "Knife Set", "Bowl")),
    ("Groceries", 4.0, True, ("Olive Oil", "Pasta", "Granola", "Honey", "Rice")),
    ("Toys", 15.0, False, ("Puzzle", "Plush Bear", "Robot Kit", "Board Game", "Kite")),
    ("Books", 12.0, False, ("Novel", "Cookbook", "Atlas", "Notebook", "Comic")),
    ("Electronics", 60.0, False, ("Headphones", "Charger", "Speaker", "Lamp", "Keyboard")),
    ("Beauty", 9.0, True, ("Shampoo", "Face Cream", "Lip Balm", "Soap", "Serum")),
    ("Garden", 20.0, False, ("Planter", "Seeds", "Hose", "Trowel", "Bird Feeder")),
    ("Sports", 25.0, False, ("Yoga Mat", "Water Bottle", "Dumbbell", "Ball", "Socks")),
    ("Coffee & Tea", 7.0, True, ("Coffee Beans", "Green Tea", "Filter Papers", "Espresso")),
    ("Pet Supplies", 8.0, True, ("Dog Treats", "Cat Litter", "Pet Bowl", "Chew Toy")),
    ("Home Decor", 22.0, False, ("Candle", "Cushion", "Frame", "Vase", "Clock")),
    ("Stationery", 5.0, False, ("Pen Set", "Card", "Wrapping Paper", "Diary", "Stickers")),
    ("Baby", 10.0, True, ("Nappies", "Wipes", "Bib", "Rattle", "Baby Lotion")),
    ("Fashion", 30.0, False, ("Scarf", "T-Shirt", "Hat", "Gloves", "Belt")),
    ("Jewellery", 35.0, False, ("Necklace", "Earrings", "Bracelet", "Ring")),
    ("Health", 8.0, True, ("Vitamins", "Plasters", "Hand Gel", "Tissues")),
    ("Outdoor", 40.0, False, ("Tent", "Torch", "Backpack", "Flask", "Compass")),
    ("Crafts", 9.0, False, ("Yarn", "Paint Set", "Brushes", "Glue Gun", "Beads")),
    ("Party", 6.0, False, ("Balloons", "Napkins", "Bunting", "Candles", "Party Hats")),
    ("Bathroom", 14.0, False, ("Towel", "Bath Mat", "Toothbrush Holder", "Mirror")),
    ("Cleaning", 5.0, True, ("Detergent", "Sponges", "Spray", "Cloths", "Bin Bags")),
    ("Music", 45.0, False, ("Ukulele", "Guitar Strings", "Tuner", "Harmonica")),
    ("Games", 35.0, False, ("Card Game", "Console Game", "Chess Set", "Dice Set")),
    ("Travel", 28.0, False, ("Suitcase Tag", "Neck Pillow", "Adapter", "Wash Bag")),
    ("Furniture", 90.0, False, ("Stool", "Shelf", "Side Table", "Chair")),
    ("Lighting", 32.0, False, ("Desk Lamp", "Fairy Lights", "Bulb", "Lantern")),
    ("Storage", 16.0, False, ("Basket", "Box", "Jar", "Hook Rail")),
    ("Wine & Spirits", 15.0, True, ("Red Wine", "Gin", "Prosecco", "Cider")),
    ("Snacks", 3.0, True, ("Crisps", "Chocolate", "Nuts", "Biscuits", "Popcorn")),
    ("Seasonal", 12.0, False, ("Ornament", "Advent Calendar", "Wreath", "Stocking")),
)
ADJECTIVES = np.array(
    [
        "Classic",
        "Deluxe",
        "Eco",
        "Mini",
        "Vintage",
        "Modern",
        "Organic",
        "Handmade",
        "Premium",
        "Travel",
        "Family",
        "Nordic",
        "Rustic",
        "Smart",
        "Everyday",
        "Luxury",
        "Bright",
        "Cosy",
    ],
    dtype=object,
)
BUNDLE_SIZE = 5
SHELF_LIFE_DAYS = 3 * 365


@dataclass
class Catalog:
    """Product arrays indexed 0..n-1 (`ids` holds the string ids)."""

    ids: np.ndarray  # object str
    category: np.ndarray  # int category index
    category_names: np.ndarray  # object str, one per category
    staple_category: np.ndarray  # bool, one per category
    price: np.ndarray
    popularity: np.ndarray  # sums to 1
    first_day: np.ndarray  # first selling day index (negative: launched before the start)
    last_day: np.ndarray  # last selling day index (inclusive)
    names: np.ndarray
    bundle_of: np.ndarray  # bundle index of each product
    bundle_members: np.ndarray  # product indices grouped by bundle
    bundle_start: np.ndarray  # offset of each bundle in bundle_members
    bundle_size: np.ndarray

    @property
    def n(self) -> int:
        return int(self.ids.size)

    @property
    def staple(self) -> np.ndarray:
        return self.staple_category[self.category]

    def on_sale(self, product: np.ndarray, day: np.ndarray) -> np.ndarray:
        return (self.first_day[product] <= day) & (day <= self.last_day[product])

    def to_frame(self, start: date) -> pd.DataFrame:
        t0 = np.datetime64(start, "ns").astype("int64")
        launched = (t0 + self.first_day.astype("int64") * NS_PER_DAY).astype("datetime64[ns]")
        return pd.DataFrame(
            {
                "product_id": self.ids,
                "category": self.category_names[self.category],
                "price": self.price,
                "name": self.names,
                "available": self.last_day >= self.last_day.max(),
                "launched_at": launched,
            }
        )


def prices_frame(
    rng: np.random.Generator, catalog: Catalog, start: date, markdowns: tuple = ()
) -> pd.DataFrame:
    """The prices table: each product's list price from its launch, planned 2-6 weeks before,
    and each markdown (product, first day, cut) as a new price planned 2-6 weeks ahead."""
    t0 = np.datetime64(start, "ns").astype("int64")
    prod = np.arange(catalog.n)
    day = catalog.first_day.astype("int64")
    price = catalog.price
    if markdowns and markdowns[0].size:
        md_prod, md_first, md_cut = markdowns
        prod = np.concatenate([prod, md_prod])
        day = np.concatenate([day, md_first.astype("int64")])
        price = np.concatenate([price, np.round(catalog.price[md_prod] * (1 - md_cut), 2)])
    valid = (t0 + day * NS_PER_DAY).astype("datetime64[ns]")
    lead = rng.integers(14, 43, prod.size).astype("timedelta64[D]").astype("timedelta64[ns]")
    df = pd.DataFrame(
        {
            "product_id": catalog.ids[prod],
            "valid_from": valid,
            "price": price,
            "planned_at": valid - lead,
        }
    )
    return df.sort_values(["product_id", "valid_from"], kind="mergesort").reset_index(drop=True)


def make_catalog(
    rng: np.random.Generator, n_products: int, n_categories: int, days: int, zipf_exponent: float
) -> Catalog:
    """Products in categories with log-normal prices, Zipf popularity, launch and
    discontinuation days, names and bundles."""
    n_categories = min(n_categories, len(CATEGORIES), n_products)
    cats = CATEGORIES[:n_categories]
    shares = rng.dirichlet(np.full(n_categories, 3.0))
    category = np.concatenate(
        [np.arange(n_categories), rng.choice(n_categories, n_products - n_categories, p=shares)]
    )
    rng.shuffle(category)

    median = np.array([c[1] for c in cats])
    raw = np.exp(np.log(median[category]) + 0.5 * rng.standard_normal(n_products))
    price = np.maximum(np.round(raw) - 0.01, 0.49)
    price = np.where(raw < 3, np.round(raw, 1) - 0.01, price).clip(0.49)

    rank = rng.permutation(n_products) + 1
    popularity = rank.astype(float) ** -zipf_exponent
    popularity /= popularity.sum()

    launched_in_period = rng.random(n_products) < 0.15
    first_day = np.where(
        launched_in_period,
        rng.integers(1, max(2, int(days * 0.9)), n_products),
        -rng.integers(1, SHELF_LIFE_DAYS, n_products),
    )
    discontinued = (rng.random(n_products) < 0.04) & ~launched_in_period
    last_day = np.where(discontinued, rng.integers(days // 2, days, n_products), days - 1)

    names = _names(rng, cats, category)
    order, bundle_start, bundle_of, bundle_size = _bundles(rng, category)
    return Catalog(
        ids=make_ids("P", n_products, 6),
        category=category,
        category_names=np.array([c[0] for c in cats], dtype=object),
        staple_category=np.array([c[2] for c in cats]),
        price=price,
        popularity=popularity,
        first_day=first_day,
        last_day=last_day,
        names=names,
        bundle_of=bundle_of,
        bundle_members=order,
        bundle_start=bundle_start,
        bundle_size=bundle_size,
    )


def _names(rng: np.random.Generator, cats, category: np.ndarray) -> np.ndarray:
    """A readable title per product: an adjective and a noun of its category."""
    n_products = category.size
    nouns = [np.array(c[3], dtype=object) for c in cats]
    noun_pick = rng.integers(0, 1 << 30, n_products)
    noun = np.array(
        [nouns[c][k % nouns[c].size] for c, k in zip(category, noun_pick, strict=True)],
        dtype=object,
    )
    return ADJECTIVES[rng.integers(0, ADJECTIVES.size, n_products)] + " " + noun


def _bundles(rng: np.random.Generator, category: np.ndarray):
    """Bundles: small groups inside a category that are bought together.

    Returns (members in bundle order, start of each bundle, bundle of each product, sizes).
    """
    n_products = category.size
    order = np.lexsort((rng.random(n_products), category))
    sorted_cat = category[order]
    group_start = np.searchsorted(sorted_cat, sorted_cat, side="left")
    local = np.arange(n_products) - group_start
    key = sorted_cat.astype(np.int64) * n_products + local // BUNDLE_SIZE
    _, bundle_start, bundle_sorted = np.unique(key, return_index=True, return_inverse=True)
    bundle_of = np.empty(n_products, dtype=np.int64)
    bundle_of[order] = bundle_sorted
    bundle_size = np.diff(np.append(bundle_start, n_products))
    return order, bundle_start, bundle_of, bundle_size
