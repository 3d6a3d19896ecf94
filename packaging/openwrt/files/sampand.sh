#!/bin/sh
exec /usr/bin/python3 -m sampan.daemon.main "$@"
