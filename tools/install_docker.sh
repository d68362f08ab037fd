#!/usr/bin/env bash
# Make sure a Docker engine can run here: install Debian's docker.io when dockerd is missing (as root, with apt).
# Never fails `make run`: without an engine, dispatch starts anyway and queued jobs wait until one answers.
set -u
command -v dockerd >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "hades: installing docker.io (the engine that runs job steps)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq docker.io >/dev/null && exit 0
fi
echo "hades: no Docker engine installed; jobs will wait in the queue until one answers (apt-get install docker.io)"
exit 0
