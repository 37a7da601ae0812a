# The demo site as one image; docker-compose.yml runs it as web, worker and beat.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md constraints.txt ./
COPY agentflow ./agentflow
# The dependency versions the test suite passed with (constraints.txt, `make lock`).
RUN pip install --no-cache-dir -c constraints.txt ".[openai]"
COPY . .
# The admin's and the console's static files, into STATIC_ROOT (var/static), where WhiteNoise
# serves them from the web process: daphne serves none of its own.
RUN python manage.py collectstatic --noinput
