#!/usr/bin/env bash
# Print the path of a working Python 3.10 interpreter (oneflow==0.9.0 has wheels up to cp310 only).
set -u
candidates=(python3.10)
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root 2>/dev/null)
  candidates+=("$root"/versions/3.10*/bin/python3.10)
fi
candidates+=("$HOME"/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10)
for c in "${candidates[@]}"; do
  if out=$("$c" -c 'import sys; print(sys.version_info[:2] == (3, 10))' 2>/dev/null) && [ "$out" = True ]; then
    command -v "$c" 2>/dev/null || echo "$c"
    exit 0
  fi
done
echo "error: no working python3.10 interpreter found (tried python3.10 on PATH and pyenv's versions); install Python 3.10, e.g. 'pyenv install 3.10', since oneflow==0.9.0 ships wheels for cp310 only" >&2
exit 1
