"""``python -m bestie <stage>``: see bestie.cli."""

from bestie.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
