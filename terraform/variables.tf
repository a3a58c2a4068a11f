variable "project_id" {
  description = "GCP project that holds everything (bucket, datasets, VM, secret)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project ID: 6-30 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of the VM's subnet, router and Cloud NAT, e.g. europe-west1 or europe-west10."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]{1,2}$", var.region))
    error_message = "region must look like europe-west1, europe-west10 or us-central1."
  }
}

variable "zone" {
  description = "Zone of the VM; must be inside var.region (checked before the VM is created), e.g. europe-west1-b."
  type        = string
  default     = "europe-west1-b"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]{1,2}-[a-z]$", var.zone))
    error_message = "zone must look like europe-west1-b or europe-west10-a."
  }
}

variable "name" {
  description = "Prefix for resource names (VM, service account, network, secret)."
  type        = string
  default     = "estore-ops"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,18}[a-z0-9]$", var.name))
    error_message = "name must be 4-20 lower-case letters, digits or hyphens, starting with a letter (it becomes part of a service account ID)."
  }
}

variable "bucket_name" {
  description = "Globally unique name of the landing bucket (landing/ and state/ prefixes live in it). Empty: <project_id>-estore-landing."
  type        = string
  default     = ""

  validation {
    condition     = var.bucket_name == "" || can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 lower-case letters, digits, '-' or '_' (no dots), or empty for the default."
  }
}

variable "location" {
  description = "Location of the bucket and the BigQuery datasets: a multi-region (EU, US) or a region (europe-west1). Keep them together so loads never cross regions."
  type        = string
  default     = "EU"

  validation {
    condition     = can(regex("^(EU|US|[a-z]+-[a-z]+[0-9]{1,2})$", var.location))
    error_message = "location must be a multi-region (EU or US) or a region such as europe-west1."
  }
}

variable "datasets" {
  description = "BigQuery dataset IDs by role. raw is where estore-ops loads files; dbt builds staging and marts and writes snapshots. They must match the dbt project's schema names."
  type = object({
    raw       = string
    staging   = string
    marts     = string
    snapshots = string
  })
  default = {
    raw       = "raw"
    staging   = "staging"
    marts     = "marts"
    snapshots = "snapshots"
  }

  # Terraform's regex() is RE2, which refuses repeat counts above 1000: the length is checked apart.
  validation {
    condition     = alltrue([for id in values(var.datasets) : length(id) <= 1024 && can(regex("^[A-Za-z0-9_]+$", id))])
    error_message = "Each dataset ID may contain only letters, digits and underscores, 1024 characters at most."
  }
}

variable "noncurrent_version_days" {
  description = "Days a noncurrent (overwritten or deleted) object version is kept in the bucket before it is deleted. This is how far back the state history can be recovered (kept by age, not by count: the state is rewritten every few minutes)."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_days >= 1 && var.noncurrent_version_days <= 3650 && floor(var.noncurrent_version_days) == var.noncurrent_version_days
    error_message = "noncurrent_version_days must be a whole number between 1 and 3650."
  }
}

variable "machine_type" {
  description = "VM machine type. The jobs mostly wait on GCS and BigQuery: e2-small is enough for most stores."
  type        = string
  default     = "e2-small"

  validation {
    condition     = can(regex("^[a-z0-9]+-[a-z0-9-]+$", var.machine_type))
    error_message = "machine_type must be a GCE machine type such as e2-small or n2-standard-2."
  }
}

variable "boot_disk_gb" {
  description = "Boot disk size in GB (Debian 12 image, the virtual environment, dbt's work folder)."
  type        = number
  default     = 20

  validation {
    condition     = var.boot_disk_gb >= 10 && var.boot_disk_gb <= 1000
    error_message = "boot_disk_gb must be between 10 and 1000."
  }
}

variable "subnet_cidr" {
  description = "IP range of the VM's subnet (private addresses only; the VM has no external IP)."
  type        = string
  default     = "10.20.0.0/24"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0)) && var.subnet_cidr != "0.0.0.0/0"
    error_message = "subnet_cidr must be a private CIDR range such as 10.20.0.0/24."
  }
}

variable "repo_url" {
  description = "Git URL pip installs estore-ops from, e.g. https://github.com/acme/estore-ops.git (must be reachable from the VM through Cloud NAT)."
  type        = string

  validation {
    condition     = can(regex("^(https://|ssh://|git@)[^ ]+$", var.repo_url))
    error_message = "repo_url must be an https:// or ssh:// git URL without spaces."
  }
}

variable "repo_ref" {
  description = "The release to install: a version tag (v0.1.0) or a full 40-character commit. No branch: a reboot must never change the code."
  type        = string

  validation {
    condition     = can(regex("^(v?[0-9]+\\.[0-9]+\\.[0-9]+([-+][0-9A-Za-z.-]+)?|[0-9a-f]{40})$", var.repo_ref))
    error_message = "repo_ref must be a version tag such as v0.1.0 or a full 40-character commit hash (a branch such as main moves)."
  }
}

variable "slack_channel" {
  description = "Slack channel the alerts go to, e.g. #data-alerts (the bot must be invited there)."
  type        = string

  validation {
    condition     = can(regex("^[#A-Za-z0-9][A-Za-z0-9._-]{0,80}$", var.slack_channel))
    error_message = "slack_channel must be a channel name such as #data-alerts or a channel ID such as C0123456789."
  }
}

variable "operators" {
  description = "Principals allowed to SSH to the VM through IAP with OS Login (sudo), e.g. [\"user:ana@example.com\", \"group:data-ops@example.com\"]."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.operators : can(regex("^(user|group|serviceAccount):[^@ ]+@[^ ]+$", m))])
    error_message = "Each operator must be user:EMAIL, group:EMAIL or serviceAccount:EMAIL."
  }
}

variable "enable_apis" {
  description = "Enable the Google APIs this configuration needs (compute, iap, bigquery, storage, secretmanager, iam, cloudresourcemanager)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels put on every resource that supports them."
  type        = map(string)
  default     = { app = "estore-ops" }

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "Label keys and values must be lower-case letters, digits, '_' or '-' (keys start with a letter, 63 characters at most)."
  }
}

variable "verify_schedule" {
  description = "When the VM runs `estore-ops verify` (the integrity audit that alerts when the warehouse no longer matches the landed files), as a systemd OnCalendar= expression in the VM's time zone (UTC)."
  type        = string
  default     = "Mon *-*-* 03:00:00"

  validation {
    condition     = can(regex("^[A-Za-z0-9 ,.*:/~+_-]{1,100}$", var.verify_schedule))
    error_message = "verify_schedule must be a systemd OnCalendar= expression such as \"Mon *-*-* 03:00:00\" (check it with systemd-analyze calendar)."
  }
}
