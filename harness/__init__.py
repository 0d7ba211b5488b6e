"""The real-kernel harness shared by the kernel tests and the guest benchmark.

The host kernel has no device-mapper, so everything that must meet the real
dm-mirror and dm-log-userspace boots Debian's own kernel under qemu:

* :mod:`harness.kernel`: fetching, unpacking and caching the Debian kernel;
* :mod:`harness.initramfs`: the busybox initramfs whose ``/init`` is
  ``harness/guest/init.sh``;
* :mod:`harness.guest`: one boot running one guest script (``run_guest``), what
  it left behind (``GuestRun``), and ``python -m harness.guest``;
* :mod:`harness.topology`: Redis and logsvc on the host, and any number of guests
  (nodes) on shared leg images that can be crashed, frozen and rebooted;
* :mod:`harness.servers`: the host's redis-server processes;
* ``harness/guest/``: every guest script, each sourcing ``lib.sh``, the one
  library of guest shell helpers.

This package imports neither ``tests`` nor ``bench``; both import it.
"""
