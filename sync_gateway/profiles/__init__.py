"""Offline data profiles: which ERP data each role's devices carry (YAML; defaults in ``profiles/defaults/``).

``load_profiles`` reads and checks the files; ``ProfileIndex`` matches documents to users at the cost of
the matches; ``Evaluation`` computes what a set of users should hold (backfill, re-evaluation, dry run).
"""

from sync_gateway.profiles.desired import Evaluation, Planned, planned_copy
from sync_gateway.profiles.index import ProfileIndex
from sync_gateway.profiles.loader import ProfileError, load_profile_text, load_profiles
from sync_gateway.profiles.model import (
    EntityRule,
    Profile,
    ProfileSet,
    UserContext,
    content_digest,
    profile_config_doc,
)
from sync_gateway.profiles.selector import Selector, compile_selector

__all__ = [
    "EntityRule",
    "Evaluation",
    "Planned",
    "Profile",
    "ProfileError",
    "ProfileIndex",
    "ProfileSet",
    "Selector",
    "UserContext",
    "compile_selector",
    "content_digest",
    "load_profile_text",
    "load_profiles",
    "planned_copy",
    "profile_config_doc",
]
