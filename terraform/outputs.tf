output "bucket" {
  description = "The landing bucket (landing files under landing/, estore-ops state under state/)."
  value       = google_storage_bucket.landing.name
}

output "landing_url" {
  description = "ESTORE_LANDING as written to the VM's environment file."
  value       = "gs://${google_storage_bucket.landing.name}/landing"
}

output "datasets" {
  description = "BigQuery dataset IDs by role (raw, staging, marts, snapshots)."
  value       = { for role, ds in google_bigquery_dataset.estore : role => ds.dataset_id }
}

output "service_account" {
  description = "Email of the service account the VM (and so estore-ops) runs as."
  value       = google_service_account.vm.email
}

output "slack_token_secret" {
  description = "Secret Manager secret ID for the Slack bot token; add its value with gcloud (docs/deploying.md)."
  value       = google_secret_manager_secret.slack_token.secret_id
}

output "vm_name" {
  description = "Name of the VM that runs the timers."
  value       = google_compute_instance.vm.name
}

output "ssh_command" {
  description = "SSH to the VM through IAP (no public IP, OS Login)."
  value       = "gcloud compute ssh ${google_compute_instance.vm.name} --project ${var.project_id} --zone ${var.zone} --tunnel-through-iap"
}

output "project_id" {
  description = "The project everything lives in (for gcloud commands)."
  value       = var.project_id
}
