"""app3 of the seed article: logs every level through the stock PUBHandler."""

from stock_app import EVERY_LEVEL, main

if __name__ == "__main__":
    main("app3", EVERY_LEVEL)
