-- Runs once, when the postgres container starts on an empty data volume (/docker-entrypoint-initdb.d), as the
-- superuser (POSTGRES_USER) connected to POSTGRES_DB (= prefect). It creates one login role per service, each
-- owning its own database, so neither server runs as the superuser.
--
-- Passwords come from the container's environment (compose passes them from infra/.env) through psql's
-- \getenv (psql >= 15; the postgres:16 image has it), so no secret is written in this file.
-- Kubernetes: infra/k8s/postgres.yaml carries a copy of this script in a ConfigMap; keep the two in sync
-- (infra/check.sh compares them).

\set ON_ERROR_STOP on
\getenv prefect_password PREFECT_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD

-- Prefect: the database already exists (POSTGRES_DB); give it to its own role.
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
ALTER DATABASE prefect OWNER TO prefect;

-- MLflow: role and database.
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;

-- Prefect's migrations run CREATE EXTENSION IF NOT EXISTS pg_trgm; pg_trgm is a trusted extension (a database
-- owner may create it), but creating it here as the superuser removes any doubt.
\connect prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
