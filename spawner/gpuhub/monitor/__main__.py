"""``python -m gpuhub.monitor``: run the monitor service (the hub's managed service)."""

from .app import main

if __name__ == "__main__":
    main()
