# ruff: noqa: F821 - read, write and settings are the sandbox's host functions and inputs
# A code note: runs in the sandbox; read()/write() reach only the score fields the manifest lists.
reply = read("final")
write("final", reply + "\n-- " + settings["signature"])
