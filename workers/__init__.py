"""unlearnd workers: the Celery app, thin tasks, job leasing, and the job flows."""
