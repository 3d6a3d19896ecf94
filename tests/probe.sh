#!/bin/sh
# Prints what a container's process sees, section by section, so that the output of the
# same bundle under two runtimes can be compared line by line. Runs under busybox sh.
# Reads this shell's own /proc entries ($$) rather than /proc/self, which would be the
# helper process that reads it. Nothing here prints run-specific numbers (inode numbers,
# device numbers of anonymous filesystems, mount ids, times); the few that remain are
# normalised by the Python side (the container id, pipe inodes).

exec 2>&1 # one stream, in order
sec() { echo; echo "## $1"; }

sec "process"
echo "pid: $$"
echo "ppid: $PPID"
echo "cmdline(1): $(tr '\0' ' ' </proc/1/cmdline)"
echo "cwd: $(pwd)"
echo "umask: $(umask)"
echo "oom_score_adj: $(cat /proc/$$/oom_score_adj)"
echo "id: $(id)"
echo "hostname: $(hostname 2>&1)"
echo "uname -n: $(uname -n 2>&1)"
echo "domainname: $(cat /proc/sys/kernel/domainname 2>&1)"
for k in net/ipv4/ip_forward kernel/msgmax kernel/shm_rmid_forced; do
	echo "sysctl $k: $(cat /proc/sys/$k 2>&1)"
done
for fd in 0 1 2; do
	# pipe:[12345] and socket:[12345] name an inode that changes from run to run.
	echo "fd $fd: $(readlink /proc/$$/fd/$fd | sed 's/:\[[0-9]*\]$/:[N]/')"
done
echo "tty: $(tty 2>&1)"

sec "status"
grep -E '^(Uid|Gid|Groups|NoNewPrivs|Seccomp|Seccomp_filters|Cap(Inh|Prm|Eff|Bnd|Amb)|Sig(Ign|Blk|Cgt)|Cpus_allowed_list|Mems_allowed_list|Speculation_Store_Bypass|SpeculationIndirectBranch)' \
	/proc/$$/status

sec "environment"
env | sort

sec "rlimits"
ulimit -a

sec "cgroup membership"
cat /proc/$$/cgroup

sec "mounts"
# mountinfo: id parent major:minor root mountpoint opts [optional...] - fstype source superopts
# Printed: mountpoint, the mountpoint of its parent (the tree, without mount ids), root,
# fstype, source, per-mount options, superblock options and the propagation tags without
# their peer-group numbers. Sorted: the order runtimes mount independent things in (device
# nodes, masked paths) carries no meaning, and "under=" keeps the tree.
awk '{
	prop = ""
	i = 7
	while ($i != "-") { tag = $i; sub(/:[0-9]+$/, "", tag); prop = prop " " tag; i++ }
	if (prop == "") prop = " private"
	mp[$1] = $5
	parent[NR] = $2
	line[NR] = $5 " under=%s root=" $4 " type=" $(i + 1) " src=" $(i + 2) " opts=" $6 " super=" $(i + 3) " prop=" substr(prop, 2)
}
END {
	for (n = 1; n <= NR; n++) {
		up = (parent[n] in mp) ? mp[parent[n]] : "-"
		printf line[n] "\n", up
	}
}' /proc/$$/mountinfo | sort

sec "/dev"
find /dev | sort | while read -r f; do
	if [ -L "$f" ]; then
		echo "$f -> $(readlink "$f")"
	else
		stat -c '%n %F mode=%a dev=%t:%T owner=%u:%g' "$f"
	fi
done

sec "modes"
for p in / /bin /etc /tmp /root /run /proc /sys /sys/fs /sys/fs/cgroup /sys/fs/cgroup/memory \
	/dev /dev/pts /dev/shm /dev/mqueue /mnt /mnt/ro /mnt/rw /mnt/rbind /mnt/rbind/sub \
	/mnt/bind /mnt/bind/sub /mnt/file /out; do
	[ -e "$p" ] && stat -c '%n %F mode=%a owner=%u:%g' "$p"
done

sec "cgroup limits"
ls /sys/fs/cgroup 2>&1 | tr '\n' ' '
echo
for f in \
	memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes \
	memory/memory.soft_limit_in_bytes memory/memory.swappiness memory/memory.oom_control \
	memory/memory.kmem.limit_in_bytes \
	pids/pids.max \
	cpu/cpu.shares cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu/cpu.rt_runtime_us \
	cpuset/cpuset.cpus cpuset/cpuset.mems \
	blkio/blkio.weight blkio/blkio.bfq.weight \
	devices/devices.list freezer/freezer.state \
	memory.max memory.swap.max memory.low memory.high pids.max cpu.max cpu.weight \
	cpuset.cpus cpuset.mems io.weight cgroup.controllers cgroup.freeze; do
	p=/sys/fs/cgroup/$f
	if [ "${f##*/}" = devices.list ] && [ -e "$p" ]; then
		# The kernel lists device exceptions in the order they were written, which
		# carries no meaning: sorted.
		echo "$f: $(sort <"$p" 2>&1 | tr '\n' ';')"
	elif [ -e "$p" ]; then
		echo "$f: $(tr '\n' ';' <"$p" 2>&1)"
	else
		echo "$f: absent"
	fi
done

sec "writable"
for p in / /bin /bin/busybox /etc /etc/passwd /tmp /root /run /dev /dev/null /dev/zero \
	/dev/full /dev/random /dev/urandom /dev/tty /dev/ptmx /dev/pts /dev/shm /dev/mqueue \
	/proc /proc/sys /proc/sys/kernel/hostname /proc/sys/kernel/domainname /proc/sysrq-trigger \
	/proc/bus /proc/fs /proc/irq /proc/self/attr/current /proc/$$/oom_score_adj \
	/sys /sys/kernel /sys/fs/cgroup /sys/fs/cgroup/memory /sys/fs/cgroup/pids \
	/mnt /mnt/ro /mnt/rw /mnt/rbind /mnt/rbind/sub /mnt/file; do
	[ -e "$p" ] || [ -L "$p" ] || continue
	# busybox's test -w says yes to root whatever the mount, so really try: a directory
	# must take a new entry (removed at once), a file must open for appending (nothing
	# is written).
	if [ -d "$p" ] && [ ! -L "$p" ]; then
		how=mkdir
		if mkdir "$p/.probe.$$" 2>/dev/null; then
			ok=yes
			rmdir "$p/.probe.$$"
		else
			ok=no
		fi
	else
		how=open
		if (: >>"$p") 2>/dev/null; then ok=yes; else ok=no; fi
	fi
	echo "$p: $how=$ok"
done

sec "masked"
for p in /proc/acpi /proc/asound /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list \
	/proc/timer_stats /proc/sched_debug /sys/firmware /proc/scsi; do
	if [ ! -e "$p" ]; then
		echo "$p: absent"
	elif [ -d "$p" ]; then
		echo "$p: dir entries=$(ls -A "$p" 2>/dev/null | wc -l)"
	elif head -c 64 "$p" >/dev/null 2>&1; then
		echo "$p: file bytes=$(head -c 64 "$p" | wc -c)"
	else
		echo "$p: file unreadable"
	fi
done

sec "network"
awk -F: 'NR > 2 { gsub(/ /, "", $1); print $1 }' /proc/net/dev | sort | tr '\n' ' '
echo
ip -o link 2>&1 | sed 's/^[0-9]*: //; s/ *\\.*//'

sec "actions"
# Each line runs one thing a seccomp profile, a read-only mount or a missing capability
# may refuse, and prints what happened.
try() {
	out=$("$@" 2>&1)
	echo "$*: rc=$? $(echo "$out" | head -n 1)"
}
try uname -s
try mkdir /dev/shm/probe-dir
rmdir /dev/shm/probe-dir 2>/dev/null
try touch /tmp/probe-file
rm -f /tmp/probe-file 2>/dev/null
try linux32 true
try chown 65534 /dev/shm
try hostname probe-new-name
try chroot / true
try mknod /dev/shm/probe-node c 1 3
rm -f /dev/shm/probe-node 2>/dev/null
try kill -0 1
echo "## end"
