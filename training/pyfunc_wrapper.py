"""Where models logged before `registry.pyfunc` find their wrapper class (their pickle names it).

New models are logged with `registry.pyfunc.NativeModel`, which travels with the model's code.
"""

from __future__ import annotations

from registry.pyfunc import NativeModel

__all__ = ["NativeModel"]
