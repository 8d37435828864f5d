"""Board-side tools: hardware profiles (TOML), the HIL harness, speed measurement helpers.

Not part of the installed service (``kiosk`` never imports it); run from a checkout, e.g.
``python -m hardware.hil``, ``python -m hardware.tune``, ``python hardware/arm_check.py``.
"""
