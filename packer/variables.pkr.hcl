variable "base_image_url" {
  type        = string
  description = "Debian generic cloud image (qcow2) the appliance is built on."
  default     = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2"
}

# No default on purpose: the build must pin the exact image it starts from. Take the value from
# the SHA512SUMS next to the image (sha512:<hex>), or pass file:<url of SHA512SUMS> when the
# build machine can reach it.
variable "base_image_checksum" {
  type        = string
  description = "Checksum of base_image_url: sha512:<hex> or file:<url of SHA512SUMS>."
}

variable "wheel_dir" {
  type        = string
  description = "Directory of wheels for sluice and its dependencies (pip wheel . -w DIR)."
  default     = "packer/wheels"
}

variable "disk_size" {
  type    = string
  default = "4G"
}

variable "memory" {
  type    = number
  default = 1024
}

variable "cpus" {
  type    = number
  default = 2
}

variable "accelerator" {
  type        = string
  description = "kvm when /dev/kvm is usable, tcg (software emulation) otherwise."
  default     = "kvm"
}

variable "output_directory" {
  type    = string
  default = "output-sluice"
}

variable "ssh_username" {
  type        = string
  description = "Build-time login, created by cloud-init/user-data and deleted by cleanup.sh."
  default     = "packer"
}

variable "ssh_password" {
  type      = string
  sensitive = true
  default   = "packer-build-only"
}
