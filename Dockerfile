# The image a Fly machine boots for your flyjobs calls: Python, flyjobs and your code.
# Build it from your project folder (the one with pyproject.toml) and push it to Fly:
#   fly deploy --build-only --push --image-label latest   (or: docker build -t registry.fly.io/APP:latest .)
# then set FLYJOBS_IMAGE (or [tool.flyjobs] image) to that reference.
FROM python:3.12-slim

# Bytecode is compiled at build time below: every machine starts from a fresh copy of the
# image, so compiling at run time would be paid by every call.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The worker starts here, so your modules import as they do from your project's root.
WORKDIR /app
# Your project and its dependencies (flyjobs among them): a pyproject.toml/setup.py project is
# installed, a requirements.txt is installed from.
COPY . /app
RUN if [ -f pyproject.toml ] || [ -f setup.py ]; then pip install . ; fi \
 && if [ -f requirements.txt ]; then pip install -r requirements.txt ; fi \
 && python -m compileall -q /app \
 && python -m flyjobs._machine_side.drift
# ^ records the image's installed distributions (/usr/local/share/flyjobs/distributions.json):
# a call whose shipped code imports one the image lacks, or at another version than the
# caller's, is told which (code sync: the image holds the dependencies, the call the code).

# Each machine runs one call: read /flyjobs/call.msgpack, run the function, deliver, exit.
# It is the image's command (not ENTRYPOINT) so that the machine config's init.cmd, which names
# the same command, replaces it instead of being appended to it.
CMD ["python", "-m", "flyjobs.worker"]
