# ruff: noqa: F821 - read, write and settings are the sandbox's host functions and inputs
import re

reply = read("final")
write("final", re.sub(r"[\w.+-]+@[\w-]+\.[\w.-]+", settings.get("replacement", "[email]"), reply))
