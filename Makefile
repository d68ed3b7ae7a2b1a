.PHONY: run test build lint format bench

run:
	scripts/quickstart run

test:
	scripts/quickstart test

build:
	npm run build

lint:
	npm run lint

format:
	npm run format

bench:
	npm run bench
