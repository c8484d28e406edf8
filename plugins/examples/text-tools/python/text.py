"""Python tools of the text-tools system plugin: fn(args, settings) -> JSON-able result."""

import re
import unicodedata


def word_count(args, settings):
    return {"words": len(args["text"].split())}


def slugify(args, settings):
    separator = settings.get("separator", "-")
    text = unicodedata.normalize("NFKD", args["title"]).encode("ascii", "ignore").decode()
    return {"slug": re.sub(r"[^a-z0-9]+", separator, text.lower()).strip(separator)}
