"""app2 of the seed article: logs mostly errors through the stock PUBHandler."""

from stock_app import MOSTLY_ERRORS, main

if __name__ == "__main__":
    main("app2", MOSTLY_ERRORS)
