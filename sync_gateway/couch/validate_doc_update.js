function (newDoc, oldDoc, userCtx, secObj) {
  // Installed by the sync gateway into every user database as _design/sync.
  // Devices may write only their own transaction documents; everything else is server-owned.
  if (userCtx.roles.indexOf('_admin') !== -1) { return; }
  var allowed = __ALLOWED_TYPES__;
  var id = newDoc._id || '';
  var sep = id.indexOf(':');
  var prefix = sep > 0 ? id.substring(0, sep) : id;
  if (allowed.indexOf(prefix) === -1) {
    throw({forbidden: 'document ' + id + ' is server-owned or of an unknown type; devices may write only: ' +
      allowed.join(', ')});
  }
  // a transaction id is <type>:<key>, the key 1-128 printable ASCII characters: anything else the gateway
  // could not address (its receipt id, the ERP reference), so the database refuses it at write time
  if (newDoc._deleted !== true && !/^[a-z_]+:[\x21-\x7e]{1,128}$/.test(id)) {
    throw({forbidden: 'transaction ids are <type>:<key> (a key of 1-128 printable ASCII characters, no spaces)'});
  }
}
