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
}
