#!/usr/bin/env bash
# The Debian packages the test suite's optional parts need, installed when this machine lets us (root and apt-get):
#   ffmpeg                   FFmpeg's shared libraries for torchcodec (decode.backend=torchcodec) and the ffmpeg CLI
#   chromium chromium-driver a real browser for the report and page tests
#   default-jre-headless     Java, only where `java -version` does not already run (pycocoevalcap's tokenizer, METEOR)
# Without them the tests that need them skip after trying (tests/probes.py); this says which, in one line.
# SYSTEM_PACKAGES=0 skips the install (e.g. to prove the suite on a bare machine).
set -uo pipefail

wanted=(ffmpeg chromium chromium-driver)
java -version >/dev/null 2>&1 || wanted+=(default-jre-headless)
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "${SYSTEM_PACKAGES:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages for the optional tests: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/coca-video-apt.log 2>&1 \
        || echo "apt-get install ${missing[*]} failed (see /tmp/coca-video-apt.log)"
    still=()
    for pkg in "${missing[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || still+=("$pkg")
    done
    missing=("${still[@]+"${still[@]}"}")
    [ ${#missing[@]} -eq 0 ] && exit 0
fi

skips=()
for pkg in "${missing[@]}"; do
    case "$pkg" in
        ffmpeg) skips+=("torchcodec and ffmpeg-CLI tests") ;;
        chromium) skips+=("browser tests") ;;
        default-jre-headless) skips+=("Java (pycocoevalcap) tests") ;;
    esac
done
reason="not root or no apt-get"
[ "${SYSTEM_PACKAGES:-1}" = 0 ] && reason="SYSTEM_PACKAGES=0"
[ ${#skips[@]} -gt 0 ] && echo "without ${missing[*]} ($reason): $(IFS=,; echo "${skips[*]}" | sed 's/,/, /g') will skip"
exit 0
