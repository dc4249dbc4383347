-- the fraud label store beside MLflow's database (SHOPML_LABELS_URL)
CREATE DATABASE shopml_labels OWNER shopml;
