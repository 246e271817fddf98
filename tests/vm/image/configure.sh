#!/bin/sh
# Configures the debootstrapped tree for `cargo xtask vm-test`; runs inside it with chroot, after
# the files of image/rootfs/ were copied in. Part of the image's cache key: editing this file
# rebuilds the image.
set -eu

echo selfheal-vm > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tselfheal-vm\n::1\tlocalhost\n' > /etc/hosts
# The root file system is mounted read-write by the kernel (root=/dev/vda rw): no fstab entry,
# so no unit waits for a device.
: > /etc/fstab
mkdir -p /payload

systemctl set-default multi-user.target
systemctl enable selfheal-vm-runner.service
# Nobody logs in: the serial console belongs to the runner's reports. Timers that do daily
# maintenance only add noise to a boot that lasts minutes.
systemctl mask serial-getty@ttyS0.service getty@tty1.service getty-static.service \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
    man-db.timer dpkg-db-backup.timer systemd-firstboot.service
# The scenarios decide when nginx runs; it starts at boot like on any Debian host.
systemctl enable nginx.service

# The downloaded .debs are not needed in the image.
apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/*
