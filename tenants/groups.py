"""Channel group names, built in one place and always beginning with the organization.

Channels allows ASCII letters, digits, '-', '_' and '.' only, under 100 characters.
"""

from __future__ import annotations


def org_group(org_id: int, topic: str) -> str:
    name = f"org{org_id}.{topic}"
    if len(name) >= 100:
        raise ValueError("group name too long")
    return name
