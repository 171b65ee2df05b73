#!/usr/bin/env bash
# Last provisioner: leave an image that configures itself on its first real boot.
# - cloud-init forgets this build's instance, so it reads the deployment's user data afresh;
# - the build login (user packer) is removed at the next boot (it is the one running us now);
# - no machine-id, apt lists, ssh host keys or wheels baked into the image.
set -euo pipefail
[[ $EUID -eq 0 ]] || { echo "cleanup: error: must run as root" >&2; exit 1; }
rm -rf /tmp/sluice-wheels
rm -f /etc/sluice/.firstboot-done /etc/sluice/sluice.toml
if command -v cloud-init >/dev/null; then cloud-init clean --logs --seed; fi
# The build user is in use by this ssh session: delete it on the first boot, before anything else.
cat >/etc/systemd/system/sluice-remove-build-user.service <<'UNIT'
[Unit]
Description=Remove the image build user
ConditionPathExists=/home/packer
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target

[Service]
Type=oneshot
ExecStart=/usr/sbin/userdel --remove packer
ExecStartPost=/bin/rm -f /etc/sudoers.d/90-cloud-init-users /etc/systemd/system/sysinit.target.wants/sluice-remove-build-user.service /etc/systemd/system/sluice-remove-build-user.service

[Install]
WantedBy=sysinit.target
UNIT
systemctl enable sluice-remove-build-user.service
# The build turned on ssh password logins (cloud-init ssh_pwauth); the image does not keep them.
rm -f /etc/ssh/sshd_config.d/50-cloud-init.conf
sed -i 's/^PasswordAuthentication yes/PasswordAuthentication no/' /etc/ssh/sshd_config
rm -f /etc/ssh/ssh_host_*
: >/etc/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/*
echo "== cleanup: done" >&2
