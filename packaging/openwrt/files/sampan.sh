#!/bin/sh
# the sampan CLI (the wheel's console script, without pip on the router)
exec /usr/bin/python3 -c 'import sys; from sampan.cli import main; sys.argv[0] = "sampan"; main()' "$@"
