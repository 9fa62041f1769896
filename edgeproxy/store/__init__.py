"""Storage adapters behind one narrow protocol (store/base.py)."""
