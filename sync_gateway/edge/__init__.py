"""The device edge: devices replicate through the gateway, which knows every device, cuts one off, wipes it.

Layers, importing downward only: ``errors`` and ``tokens`` (basics), ``devices`` (the registry of devices in
``sync_registry``), ``routes`` (which replication paths a device may use), ``limits`` and ``feeds``
(per-process state), ``proxy`` (the streaming pass-through to CouchDB) and ``app`` (the HTTP application).
"""
