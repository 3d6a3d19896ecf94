# The daemon's socket is on tmpfs (/etc/config/sampan: exec_root, hosts): where the CLIs find it.
export SAMPAN_HOST="${SAMPAN_HOST:-unix:///var/run/sampan/sampan.sock}"
export DOCKER_HOST="${DOCKER_HOST:-unix:///var/run/sampan/sampan.sock}"
