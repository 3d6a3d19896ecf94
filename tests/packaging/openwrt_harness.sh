#!/bin/sh
# Runs an OpenWrt procd init script's start_service outside OpenWrt: UCI and procd are played by
# the functions below (the subset of /lib/functions.sh and /lib/functions/procd.sh the script
# uses, with the same calling conventions). UCI is read from $UCI_CONFIG_DIR/<package> in UCI's
# file syntax; every procd call is printed as "procd <function> <args…>", one argument a line
# after a tab, so that a test can read them back exactly.
#
# usage: openwrt_harness.sh INIT_SCRIPT FUNCTION
set -e
INIT="$1"
FN="${2:-start_service}"

# ---- UCI (config_load and friends), values kept in shell variables as functions.sh does
config_load() {
	local file="$UCI_CONFIG_DIR/$1"
	[ -f "$file" ] || return 1
	eval "$(awk '
		function unq(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); if (s ~ /^'\''.*'\''$/ || s ~ /^".*"$/) s = substr(s, 2, length(s) - 2); return s }
		function q(s) { gsub(/'\''/, "'\''\\'\'''\''", s); return "'\''" s "'\''" }
		/^[ \t]*(#|$)/ { next }
		$1 == "config" { n++; name = (NF >= 3) ? unq($3) : ("cfg" n); sec = name; next }
		$1 == "option" || $1 == "list" {
			key = $2; line = $0; sub(/^[ \t]*(option|list)[ \t]+[^ \t]+[ \t]*/, "", line); val = unq(line)
			if ($1 == "option") print "CONFIG_" sec "_" key "=" q(val)
			else { print "CONFIG_" sec "_" key "_LENGTH=$(( ${CONFIG_" sec "_" key "_LENGTH:-0} + 1 ))"
			       print "eval CONFIG_" sec "_" key "_ITEM${CONFIG_" sec "_" key "_LENGTH}=" q(q(val)) }
		}' "$file")"
}

config_get() {
	local __var="$1" __sec="$2" __opt="$3" __def="$4" __val
	# ":-" as functions.sh: an option set to '' gets the default too
	eval "__val=\${CONFIG_${__sec}_${__opt}:-\$__def}"
	eval "$__var=\$__val"
}

config_get_bool() {
	local __var="$1" __v
	config_get __v "$2" "$3" "$4"
	case "$__v" in
		1|on|true|yes|enabled) __v=1 ;;
		0|off|false|no|disabled) __v=0 ;;
		*) __v="$4" ;;
	esac
	eval "$__var=\$__v"
}

config_list_foreach() {
	local __sec="$1" __opt="$2" __cb="$3" __n __i=1 __item
	shift 3
	eval "__n=\${CONFIG_${__sec}_${__opt}_LENGTH:-0}"
	while [ "$__i" -le "$__n" ]; do
		eval "__item=\$CONFIG_${__sec}_${__opt}_ITEM${__i}"
		"$__cb" "$__item" "$@"
		__i=$((__i + 1))
	done
}

# ---- procd, recorded
procd_record() {
	printf 'procd'
	for a in "$@"; do printf '\t%s' "$a"; done
	printf '\n'
}
procd_open_instance() { procd_record open_instance "$@"; }
procd_close_instance() { procd_record close_instance "$@"; }
procd_set_param() { procd_record set_param "$@"; }
procd_append_param() { procd_record append_param "$@"; }
procd_add_reload_trigger() { procd_record add_reload_trigger "$@"; }

# rc.common would source the script and call the function
. "$INIT"
[ -n "$HARNESS_GENERATED" ] && GENERATED="$HARNESS_GENERATED"
"$FN"
