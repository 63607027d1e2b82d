"""The verbs behind ``ohlora``: each runs recipe -> plan -> preflight -> relaunch | engine.

``cli`` imports these inside its command bodies (they import the engines, which import torch), so
``ohlora --help`` stays instant. ``guard`` is the one place our errors become messages and exit codes.
"""
