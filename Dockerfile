# One image for the service and the workers; docker-compose.yml picks the command.
# The image installs the wheel, as users do, so what runs here is what a wheel ships.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY trainer ./trainer
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY constraints.txt /tmp/constraints.txt
COPY --from=build /wheels /wheels
RUN pip install -c /tmp/constraints.txt /wheels/*.whl && rm -rf /wheels
EXPOSE 8000
CMD ["caviar", "serve", "--host", "0.0.0.0", "--port", "8000"]
