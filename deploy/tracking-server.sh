#!/usr/bin/env bash
# A team's MLflow tracking server: PostgreSQL backend store, S3 artifact store, proxied artifacts.
# See docs/tracking-server.md. Every credential comes from the environment, never the command line:
#
#   FSD_DB_URI         postgresql+psycopg2://USER@HOST:5432/mlflow   (no password in it)
#   PGPASSWORD         the database password (libpq reads it; or a ~/.pgpass file)
#   FSD_ARTIFACTS      s3://BUCKET/mlartifacts
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (or an instance role / AWS_PROFILE)
#   MLFLOW_S3_ENDPOINT_URL   only for S3-compatible stores (MinIO: http://minio:9000)
#   FSD_HOST (default 0.0.0.0), FSD_PORT (5000), FSD_WORKERS (4)
#
# Workers then need only MLFLOW_TRACKING_URI=http://<this host>:<port> (artifacts go through the
# server), plus PGPASSWORD when sweeps share an Optuna study in the same PostgreSQL.
set -euo pipefail
: "${FSD_DB_URI:?set FSD_DB_URI, e.g. postgresql+psycopg2://mlflow@db.internal:5432/mlflow}"
: "${FSD_ARTIFACTS:?set FSD_ARTIFACTS, e.g. s3://team-mlflow/mlartifacts}"
case "$FSD_DB_URI" in
  *://*:*@*) echo "FSD_DB_URI carries a password; put it in PGPASSWORD or ~/.pgpass instead" >&2; exit 2 ;;
esac
python -c "import psycopg2, boto3" 2>/dev/null || {
  echo "needs psycopg2 and boto3: pip install 'fsd[postgres]' (or psycopg2-binary boto3)" >&2; exit 2; }
exec python -m mlflow server \
  --backend-store-uri "$FSD_DB_URI" \
  --artifacts-destination "$FSD_ARTIFACTS" \
  --host "${FSD_HOST:-0.0.0.0}" --port "${FSD_PORT:-5000}" --workers "${FSD_WORKERS:-4}"
