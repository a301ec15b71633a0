"""app2 of the seed article: logs mostly errors through zlogcollect's handler (--stock: pyzmq's PUBHandler)."""

from seed_app import MOSTLY_ERRORS, main

if __name__ == "__main__":
    main("app2", MOSTLY_ERRORS)
