# estore-ops on Google Cloud: landing bucket, BigQuery datasets, a least-privilege service account,
# the Slack token secret (the secret only: its value is added with gcloud and never enters the
# Terraform state), and one Debian 12 VM that runs the systemd timers.
#
# Network: the VM has no external IP and no open port. SSH goes through IAP (35.235.240.0/20 on tcp/22
# only). Outbound: Private Google Access on the subnet reaches Google APIs (GCS, BigQuery, Secret
# Manager) without NAT; Cloud NAT (router + nat) is there for what is not Google: Slack's API, and
# the git host and PyPI the startup script installs estore-ops from.

locals {
  bucket_name = var.bucket_name != "" ? var.bucket_name : "${var.project_id}-estore-landing"
  vm_name     = var.name

  apis = var.enable_apis ? toset([
    "bigquery.googleapis.com",
    "cloudresourcemanager.googleapis.com", # project-level IAM bindings are set through it
    "compute.googleapis.com",
    "iam.googleapis.com",
    "iap.googleapis.com",
    "pubsub.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]) : toset([])
}

resource "google_project_service" "apis" {
  for_each = local.apis

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# --- identity --------------------------------------------------------------------------------------

resource "google_service_account" "vm" {
  account_id   = "${var.name}-vm"
  display_name = "estore-ops jobs on ${local.vm_name}"
  description  = "Runs the estore-ops timers: objects in the landing bucket, tables in the estore datasets, the Slack token secret."

  depends_on = [google_project_service.apis]
}

# BigQuery jobs (load, query) are billed to and created in the project: the one project-level role.
resource "google_project_iam_member" "vm_bigquery_job_user" {
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.vm.member
}

# --- landing bucket ---------------------------------------------------------------------------------

resource "google_storage_bucket" "landing" {
  #checkov:skip=CKV_GCP_62:Access logging would need a second bucket with its own logs; Cloud Audit Logs record data access for this project instead.
  name                        = local.bucket_name
  location                    = var.location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # Versioning keeps every overwritten or deleted object, so the state document's history (cursor,
  # lock, runs under state/) can be recovered after a bad write. Noncurrent versions are kept by
  # age only: the state is rewritten every few minutes, so a cap on their number would keep hours,
  # not the noncurrent_version_days promised.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# Least privilege on the bucket: the VM reads and lists everything, and writes only under state/.
# The landing files can be neither overwritten nor deleted by the jobs that read them.
#
# Why IAM conditions and not two buckets: Cloud Storage evaluates a condition on resource.name
# against the object for object permissions (get, create, delete, update), so a prefix condition
# limits writes exactly. It cannot limit listing: storage.objects.list is checked on the bucket,
# whose resource name never starts with an object prefix
# (https://cloud.google.com/storage/docs/access-control/iam#conditions). So read and list are granted
# on the whole bucket without a condition, and only the write role carries the state/ condition.
# One bucket keeps the deployed URLs (gs://BUCKET/landing, gs://BUCKET/state) as they were;
# IAM conditions need uniform bucket-level access, which this bucket has.
resource "google_storage_bucket_iam_member" "vm_read" {
  bucket = google_storage_bucket.landing.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.vm.member
}

resource "google_storage_bucket_iam_member" "vm_write_state" {
  bucket = google_storage_bucket.landing.name
  role   = "roles/storage.objectUser"
  member = google_service_account.vm.member

  condition {
    title       = "estore-ops state only"
    description = "Create, replace and delete objects under state/ (cursor, lock, runs, heartbeats); never the landing files."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.landing.name}/objects/state/\")"
  }
}

# --- BigQuery ---------------------------------------------------------------------------------------

resource "google_bigquery_dataset" "estore" {
  #checkov:skip=CKV_GCP_81:Google-managed encryption is accepted for this data; CMEK would add a KMS key ring that can never be deleted.
  for_each = tomap(var.datasets)

  dataset_id                 = each.value
  friendly_name              = "estore ${each.key}"
  description                = "estore-ops ${each.key} layer."
  location                   = var.location
  delete_contents_on_destroy = false

  depends_on = [google_project_service.apis]
}

# Create, replace and read tables in the estore datasets only (no project-wide BigQuery admin).
resource "google_bigquery_dataset_iam_member" "vm_data_editor" {
  for_each = tomap(var.datasets)

  dataset_id = google_bigquery_dataset.estore[each.key].dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.vm.member
}

# --- Slack token ------------------------------------------------------------------------------------

# Only the secret: its value is added with `gcloud secrets versions add` (docs/deploying.md), so the
# token never appears in this configuration or in the Terraform state.
#
# Who can read it: the VM's service account (below), and principals whose project-level roles
# include secretmanager.versions.access, such as project owners (roles/owner) and anyone granted
# roles/secretmanager.admin or roles/secretmanager.secretAccessor on the project. Terraform cannot
# take that away from owners; keep the list of project owners short.
resource "google_secret_manager_secret" "slack_token" {
  secret_id = "${var.name}-slack-token"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

# Authoritative for this role on this secret: no other principal gets secretAccessor on it here.
resource "google_secret_manager_secret_iam_binding" "slack_token_accessor" {
  secret_id = google_secret_manager_secret.slack_token.id
  role      = "roles/secretmanager.secretAccessor"
  members   = [google_service_account.vm.member]
}

# --- network ----------------------------------------------------------------------------------------

resource "google_compute_network" "vpc" {
  name                    = "${var.name}-vpc"
  auto_create_subnetworks = false

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "vm" {
  name                     = "${var.name}-${var.region}"
  network                  = google_compute_network.vpc.id
  region                   = var.region
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true # Google APIs without an external IP

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# The only ingress rule: SSH from Google's IAP range to this VM's service account.
resource "google_compute_firewall" "iap_ssh" {
  name          = "${var.name}-allow-iap-ssh"
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  priority      = 1000
  source_ranges = ["35.235.240.0/20"] # Google's IAP TCP forwarding range

  target_service_accounts = [google_service_account.vm.email]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Cloud NAT: outbound only, for Slack and the package install (no inbound path is created).
resource "google_compute_router" "nat" {
  name    = "${var.name}-router"
  network = google_compute_network.vpc.id
  region  = var.region
}

resource "google_compute_router_nat" "nat" {
  name                               = "${var.name}-nat"
  router                             = google_compute_router.nat.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.vm.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# --- the VM -----------------------------------------------------------------------------------------

resource "google_compute_instance" "vm" {
  #checkov:skip=CKV_GCP_38:A customer-supplied key would have to sit in this configuration and in the Terraform state; the disk holds only code and scratch data, so Google-managed encryption is used.
  name         = local.vm_name
  zone         = var.zone
  machine_type = var.machine_type
  description  = "Runs estore-ops under systemd timers (ingest, transform, snapshot, health, verify)."

  can_ip_forward            = false
  allow_stopping_for_update = true

  boot_disk {
    initialize_params {
      image = "debian-cloud/debian-12"
      size  = var.boot_disk_gb
      type  = "pd-balanced"
    }
  }

  # No access_config block: no external IP. Outbound goes through Cloud NAT / Private Google Access.
  network_interface {
    subnetwork = google_compute_subnetwork.vm.id
  }

  service_account {
    email  = google_service_account.vm.email
    scopes = ["cloud-platform"] # access is limited by the account's IAM roles, not by scopes
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  # No secret here: the startup script reads the Slack token from Secret Manager at boot.
  metadata = {
    enable-oslogin         = "TRUE"
    block-project-ssh-keys = "TRUE"
    serial-port-enable     = "FALSE"
    startup-script = templatefile("${path.module}/startup.sh.tftpl", {
      project_id      = var.project_id
      bucket          = google_storage_bucket.landing.name
      location        = var.location
      raw_dataset     = google_bigquery_dataset.estore["raw"].dataset_id
      slack_channel   = var.slack_channel
      secret_name     = google_secret_manager_secret.slack_token.id
      repo_url        = var.repo_url
      repo_ref        = var.repo_ref
      verify_schedule = var.verify_schedule
      notifications   = "pubsub://${var.project_id}/${google_pubsub_subscription.landing_events.name}"
      ingest          = var.ingest
    })
  }

  lifecycle {
    precondition {
      condition     = startswith(var.zone, "${var.region}-")
      error_message = "zone must be a zone of region (e.g. europe-west1-b for europe-west1): the VM and its subnet must be in the same region."
    }
  }

  # The first boot needs the roles, the secret binding and NAT (for pip) to be in place.
  depends_on = [
    google_bigquery_dataset_iam_member.vm_data_editor,
    google_compute_router_nat.nat,
    google_project_iam_member.vm_bigquery_job_user,
    google_secret_manager_secret_iam_binding.slack_token_accessor,
    google_storage_bucket_iam_member.vm_read,
    google_storage_bucket_iam_member.vm_write_state,
  ]
}

# --- operators: SSH through IAP with OS Login -------------------------------------------------------

resource "google_iap_tunnel_instance_iam_member" "operators" {
  for_each = toset(var.operators)

  instance = google_compute_instance.vm.name
  zone     = var.zone
  role     = "roles/iap.tunnelResourceAccessor"
  member   = each.value
}

resource "google_compute_instance_iam_member" "operators_os_admin_login" {
  for_each = toset(var.operators)

  instance_name = google_compute_instance.vm.name
  zone          = var.zone
  role          = "roles/compute.osAdminLogin"
  member        = each.value
}

# `gcloud compute ssh` reads the instance and the project's OS Login metadata before it connects:
# a custom role with exactly those two permissions, narrower than roles/compute.viewer.
# Operators outside the project's organization also need roles/compute.osLoginExternalUser on the
# organization (docs/deploying.md gives the command); an organization role cannot be granted here.
resource "google_project_iam_custom_role" "operator_ssh" {
  count = length(var.operators) > 0 ? 1 : 0

  role_id     = "estoreOpsSsh_${replace(var.name, "-", "_")}" # role IDs allow letters, digits, '_' and '.'
  title       = "estore-ops: SSH to the VM (${var.name})"
  description = "What gcloud compute ssh reads before connecting through IAP with OS Login."
  permissions = ["compute.instances.get", "compute.projects.get"]

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "operators_ssh" {
  for_each = toset(var.operators)

  project = var.project_id
  role    = google_project_iam_custom_role.operator_ssh[0].id
  member  = each.value
}

# OS Login on a VM that runs as a service account requires actAs on that account.
resource "google_service_account_iam_member" "operators_act_as" {
  for_each = toset(var.operators)

  service_account_id = google_service_account.vm.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}
