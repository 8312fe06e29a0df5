"""ERP connectors, one package each, registered in the ``sync_gateway.erp_connectors`` entry point group."""
