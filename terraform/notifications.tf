# Event-driven arrival (`estore-ops watch --events`): Cloud Storage publishes an OBJECT_FINALIZE
# notification for every file written under landing/ to a Pub/Sub topic; the VM pulls them from one
# subscription and loads each file seconds after it lands. The catch-up scan (every
# catchup_interval) stays the safety net, so a lost notification delays a file, never loses it.
#
# Access: the Cloud Storage service agent may publish to the topic (nothing else); the VM's service
# account may consume and read this one subscription only; Pub/Sub's own service agent may move
# undeliverable messages to the dead-letter topic.

locals {
  landing_prefix = "landing/"
}

data "google_project" "this" {
  project_id = var.project_id
}

# The Google-managed account Cloud Storage publishes notifications as.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "landing_events" {
  #checkov:skip=CKV_GCP_83:Notification messages carry object names and sizes, never file contents; a customer-managed key would add a KMS key ring that can never be deleted.
  name                       = "${var.name}-landing-events"
  message_retention_duration = "86400s"

  depends_on = [google_project_service.apis]
}

# Authoritative-free, additive grant: only the Cloud Storage service agent publishes here.
resource "google_pubsub_topic_iam_member" "gcs_publishes_landing_events" {
  topic  = google_pubsub_topic.landing_events.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_notification" "landing" {
  bucket             = google_storage_bucket.landing.name
  topic              = google_pubsub_topic.landing_events.id
  payload_format     = "JSON_API_V1"
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = local.landing_prefix

  depends_on = [google_pubsub_topic_iam_member.gcs_publishes_landing_events]
}

# Messages Pub/Sub could not deliver after max_delivery_attempts (a file whose notification keeps
# failing) land here, kept for a week for an operator to look at.
resource "google_pubsub_topic" "landing_events_dead_letter" {
  #checkov:skip=CKV_GCP_83:Dead letters are copies of notification messages (object names and sizes); a customer-managed key would add a KMS key ring that can never be deleted.
  name                       = "${var.name}-landing-events-dead-letter"
  message_retention_duration = "604800s"

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "landing_events_dead_letter" {
  name                       = "${var.name}-landing-events-dead-letter"
  topic                      = google_pubsub_topic.landing_events_dead_letter.id
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = "" # never expires
  }
}

# The one subscription estore-ops reads (notifications = pubsub://PROJECT/SUBSCRIPTION).
resource "google_pubsub_subscription" "landing_events" {
  name  = "${var.name}-landing-events"
  topic = google_pubsub_topic.landing_events.id

  # A file is acknowledged after its load is committed and recorded; the client extends the
  # deadline while it loads. Unacknowledged messages are kept 7 days (a long outage of the VM).
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = false

  expiration_policy {
    ttl = "" # an idle subscription (a quiet month) must not be deleted
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.landing_events_dead_letter.id
    max_delivery_attempts = var.notification_max_delivery_attempts
  }
}

# Dead lettering: Pub/Sub's service agent publishes to the dead-letter topic and acknowledges the
# forwarded message on the source subscription.
resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letter_publisher" {
  topic  = google_pubsub_topic.landing_events_dead_letter.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_dead_letter_subscriber" {
  subscription = google_pubsub_subscription.landing_events.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

# The VM: consume (pull, acknowledge) and read (estore-ops checks the subscription is there) this
# subscription only. No topic or project-wide Pub/Sub role.
resource "google_pubsub_subscription_iam_member" "vm_subscriber" {
  subscription = google_pubsub_subscription.landing_events.name
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.vm.member
}

resource "google_pubsub_subscription_iam_member" "vm_viewer" {
  subscription = google_pubsub_subscription.landing_events.name
  role         = "roles/pubsub.viewer"
  member       = google_service_account.vm.member
}

variable "ingest" {
  description = "How the VM ingests: events (the long-running `estore-ops watch --events` service, files load seconds after they land) or timer (the 5-minute ingest timer)."
  type        = string
  default     = "events"

  validation {
    condition     = contains(["events", "timer"], var.ingest)
    error_message = "ingest must be events or timer."
  }
}

variable "notification_max_delivery_attempts" {
  description = "Deliveries of one notification before Pub/Sub moves it to the dead-letter topic (5-100)."
  type        = number
  default     = 10

  validation {
    condition     = var.notification_max_delivery_attempts >= 5 && var.notification_max_delivery_attempts <= 100 && floor(var.notification_max_delivery_attempts) == var.notification_max_delivery_attempts
    error_message = "notification_max_delivery_attempts must be a whole number between 5 and 100."
  }
}

output "notifications_url" {
  description = "The notifications setting of `watch --events` (ESTORE_NOTIFICATIONS, written to the VM's environment file)."
  value       = "pubsub://${var.project_id}/${google_pubsub_subscription.landing_events.name}"
}

output "dead_letter_subscription" {
  description = "Where notifications that could not be delivered are kept (gcloud pubsub subscriptions pull ... to inspect)."
  value       = google_pubsub_subscription.landing_events_dead_letter.name
}
