#!/bin/busybox sh
# The initramfs /init of the test VM: runs under busybox ash as PID 1.
# harness/initramfs.py fills in its placeholders (each NAME written between two @)
# before it goes into the initramfs:
#   MODULES          modules to insmod from /modules, dependencies first
#   NINEP            9p mount options
#   MODPROBE         the host's kmod modprobe (absolute path)
#   MODPROBE_BASE    its -d argument inside the guest
#   GUEST_MODULES    loaded before the script runs
#   OPTIONAL_MODULES loaded when the kernel has them
#   GUEST_PATH       PATH of the guest script
# Everything the host reads comes back through /results, a 9p share without
# caching, so a write is on the host as soon as it returns.
mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
say() { read -r up _ < /proc/uptime; echo "dmulog-init [$up]: $*"; }
mkdir -p /proc /sys /dev /host /newroot
mount -t proc proc /proc
say "init started"
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in @MODULES@; do insmod "/modules/$m.ko" || say "insmod $m failed"; done

SCRIPT=
SHARES=
GUEST_TIMEOUT=3600
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    dmulog.script=*) SCRIPT=${arg#dmulog.script=} ;;
    dmulog.timeout=*) GUEST_TIMEOUT=${arg#dmulog.timeout=} ;;
    dmulog.shares=*) SHARES=${arg#dmulog.shares=} ;;
  esac
done

R=/newroot
halt_now() { sync; poweroff -f; sleep 60; }
# finish: always save the kernel log, whatever happened before, then power off.
finish() {
  dmesg -s 8388608 > "$R/results/dmesg.txt" 2>&1 || dmesg > "$R/results/dmesg.txt"
  halt_now
}

mount -t 9p -o @NINEP@,ro,cache=loose hostroot /host || { say "cannot mount host root"; halt_now; }
mount -t tmpfs -o mode=0755 newroot "$R"
# The host root is read-only, so build a writable root that bind-mounts its entries.
for e in /host/* /host/.[!.]*; do
  n=${e#/host/}
  case "$n" in proc|sys|dev|tmp|run|results|kernel) continue ;; esac
  if [ -L "$e" ]; then ln -s "$(readlink "$e")" "$R/$n"
  elif [ -d "$e" ]; then mkdir "$R/$n" && mount -o bind "$e" "$R/$n"
  elif [ -e "$e" ]; then touch "$R/$n" && mount -o bind "$e" "$R/$n"
  fi
done
mkdir -p "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/run" "$R/results" "$R/kernel"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount -t devtmpfs devtmpfs "$R/dev"
mkdir -p "$R/dev/shm" "$R/dev/pts"
mount -t tmpfs -o mode=1777 shm "$R/dev/shm"
mount -t devpts devpts "$R/dev/pts"
ln -sf /proc/self/fd "$R/dev/fd"
ln -sf /proc/self/fd/0 "$R/dev/stdin"
ln -sf /proc/self/fd/1 "$R/dev/stdout"
ln -sf /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=1777 tmp "$R/tmp"
mount -t tmpfs -o mode=0755 run "$R/run"
mount -t 9p -o @NINEP@ results "$R/results" || { say "cannot mount results"; halt_now; }
mount -t 9p -o @NINEP@,ro,cache=loose kernel "$R/kernel" || say "cannot mount kernel share"
# Host directories under the guest's private /tmp or /run (e.g. a checkout in /tmp)
# come in as extra read-only shares, mounted at their host paths: "tag=path,...".
for share in $(echo "$SHARES" | tr ',' ' '); do
  mkdir -p "$R${share#*=}"
  mount -t 9p -o @NINEP@,ro,cache=loose "${share%%=*}" "$R${share#*=}" || say "cannot mount ${share#*=}"
done
mkdir -p "$R/tmp/home"
ip link set lo up
say "root ready"

export HOME=/tmp/home PATH=@GUEST_PATH@ PYTHONDONTWRITEBYTECODE=1
# NOTE: absolute path: busybox chroot would otherwise run its own modprobe applet.
chroot "$R" @MODPROBE@ -d @MODPROBE_BASE@ -a @GUEST_MODULES@ || say "modprobe of dm modules failed"
chroot "$R" @MODPROBE@ -q -d @MODPROBE_BASE@ -a @OPTIONAL_MODULES@ 2>/dev/null

[ -n "$SCRIPT" ] || { say "no dmulog.script= on the kernel command line"; finish; }
# Watchdog: a hung script (e.g. the kernel retrying a silent log server every 15 s)
# must still leave dmesg behind, so stop waiting after GUEST_TIMEOUT seconds.
( sleep "$GUEST_TIMEOUT"
  say "guest script still running after ${GUEST_TIMEOUT}s, giving up"
  echo "$GUEST_TIMEOUT" > "$R/results/guest-timeout"
  finish ) &
WATCHDOG=$!
say "modules loaded, running $SCRIPT"
# Output goes straight to the file, not through a pipe, so background processes the
# script leaves behind cannot keep this step from finishing.
chroot "$R" /bin/sh "$SCRIPT" > "$R/results/guest.log" 2>&1 < /dev/null &
SCRIPT_PID=$!
wait "$SCRIPT_PID"
RC=$?
echo "$RC" > "$R/results/rc"
say "script exit code $RC"
kill "$WATCHDOG" 2>/dev/null
finish
