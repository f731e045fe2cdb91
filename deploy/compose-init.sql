-- Roles and databases for docker-compose; same as deploy/postgres.sh bootstrap.
CREATE ROLE novyra_migrator LOGIN PASSWORD 'novyra_migrator';
CREATE ROLE novyra_app LOGIN PASSWORD 'novyra_app';
CREATE ROLE novyra_analyst LOGIN PASSWORD 'novyra_analyst';
CREATE ROLE apicurio LOGIN PASSWORD 'apicurio';
CREATE DATABASE novyra OWNER novyra_migrator;
CREATE DATABASE apicurio OWNER apicurio;
