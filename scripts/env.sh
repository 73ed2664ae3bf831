# Sourced by the README commands: where the offline data lives on this kind of machine.
# lrkit itself looks in: an explicit root > $LRKIT_DATA > /usr/share/datasets.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${LRKIT_DATA:-}" ] && [ -d "$repo/../shared/data" ]; then
  export LRKIT_DATA="$repo/../shared/data"
fi
