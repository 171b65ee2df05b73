# The sluice appliance image: a Debian cloud image (qcow2), booted by Packer's qemu builder, with
# sluice installed from its wheels into /opt/sluice/venv, the systemd units and /etc/sluice.
#
#   pip wheel . -w packer/wheels            # sluice + dependencies, from the repository root
#   packer build -var iso_checksum=sha512:... packer/
#
# The qemu builder is built into Packer 1.6 (Debian's packer); no required_plugins block.

source "qemu" "sluice" {
  iso_url          = var.base_image_url
  iso_checksum     = var.base_image_checksum
  disk_image       = true
  format           = "qcow2"
  disk_size        = var.disk_size
  disk_interface   = "virtio"
  net_device       = "virtio-net"
  accelerator      = var.accelerator
  headless         = true
  memory           = var.memory
  cpus             = var.cpus
  output_directory = var.output_directory
  vm_name          = "sluice.qcow2"

  # The Debian cloud image takes its login from cloud-init: a NoCloud seed on a CD labelled cidata.
  cd_files = ["${path.root}/cloud-init/meta-data", "${path.root}/cloud-init/user-data"]
  cd_label = "cidata"

  communicator     = "ssh"
  ssh_username     = var.ssh_username
  ssh_password     = var.ssh_password
  ssh_timeout      = "20m"
  shutdown_command = "sudo shutdown -P now"
}

build {
  sources = ["source.qemu.sluice"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/sluice-wheels"]
  }

  provisioner "file" {
    source      = "${var.wheel_dir}/"
    destination = "/tmp/sluice-wheels"
  }

  provisioner "shell" {
    execute_command  = "sudo -S env {{ .Vars }} bash '{{ .Path }}'"
    environment_vars = ["SLUICE_WHEELS=/tmp/sluice-wheels"]
    scripts = [
      "${path.root}/scripts/base-packages.sh",
      "${path.root}/scripts/install-sluice.sh",
      "${path.root}/scripts/cleanup.sh",
    ]
  }
}
