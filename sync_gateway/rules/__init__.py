"""Shared business rules: pricing, availability, approval, workflow, defined once as JSON Logic data.

The gateway evaluates them on ingest (``check_transaction``); devices evaluate the very same definitions,
delivered as ``config:rules:<name>`` documents (``config_documents``), with json-logic-js.
"""

from sync_gateway.rules.checks import check_transaction
from sync_gateway.rules.definitions import RuleSet, config_documents, default_rule_sets, load_rule_sets
from sync_gateway.rules.engine import RuleError, evaluate

__all__ = [
    "RuleError",
    "RuleSet",
    "check_transaction",
    "config_documents",
    "default_rule_sets",
    "evaluate",
    "load_rule_sets",
]
