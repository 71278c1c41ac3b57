"""Installed as an emulated host's sitecustomize: route /dev/pf to the host's pfemu daemon."""

import pfemu_shim  # pylint: disable=import-error  # installed next to this file

pfemu_shim.install_from_config()
