"""``python -m gpuhub.jobs``: run the jobs service (the hub's managed service command)."""

from .app import main

if __name__ == "__main__":
    main()
