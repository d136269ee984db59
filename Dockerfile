# One image for the service and the workers; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY trainer ./trainer
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
RUN pip install -c constraints.txt -e .
EXPOSE 8000
CMD ["caviar", "serve", "--host", "0.0.0.0", "--port", "8000"]
