#!/usr/bin/env bash
# Build the HTML documentation site into build/docs/html/.
#
# antsibull-docs renders the module and role references of the collection copy
# in build/ansible_collections/ (make copy) and the extra docs listed in
# docs/docsite/extra-docs.yml. The guides are Markdown (docs/*.md): each has an
# RST page of the same name in docs/docsite/rst/ (label and title, for
# antsibull-docs and its linter), which is replaced here by the guide itself,
# read by myst-parser. Sphinx runs with warnings as errors.
#
# Tools come from .venv-docs (requirements-docs.txt), created on first use and
# refreshed when requirements-docs.txt changes.
#
# Usage: tools/docs-build.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/.venv-docs
work=$root/build/docs
sphinx_dir=$work/sphinx
site=$work/html
docsite_prefix=ansible_collections.netbsd.pf.docsite

# --- tools ------------------------------------------------------------------------
python=$root/tools/bin/python3.11
[ -x "$python" ] || python=python3.11
"$root/tools/ensure-venv.sh" "$venv" "$python" "$root/requirements-docs.txt"
export PATH=$venv/bin:$PATH
export ANSIBLE_COLLECTIONS_PATH=$root/build

# --- every guide is on the site -----------------------------------------------------
missing=()
for guide in "$root"/docs/*.md; do
    name=$(basename "$guide" .md)
    if [ ! -f "$root/docs/docsite/rst/$name.rst" ] \
        || ! grep -qE "^ +- $name\$" "$root/docs/docsite/extra-docs.yml"; then
        missing+=("docs/$name.md")
    fi
done
if [ "${#missing[@]}" -ne 0 ]; then
    echo "not on the docs site: ${missing[*]}" >&2
    echo "each docs/NAME.md needs docs/docsite/rst/NAME.rst (label and title) and an entry in docs/docsite/extra-docs.yml" >&2
    exit 1
fi

# --- Sphinx project -----------------------------------------------------------------
rm -rf "$sphinx_dir" "$site"
mkdir -p "$work"
mkdir -m 700 "$sphinx_dir"      # antsibull-docs wants a directory only its owner can write
antsibull-docs sphinx-init --use-current --dest-dir "$sphinx_dir" \
    --project "netbsd.pf" --copyright "netbsd.pf contributors" \
    --title "netbsd.pf: pf state tables of NetBSD firewalls" --html-short-title "netbsd.pf" \
    netbsd.pf > /dev/null
cat >> "$sphinx_dir/conf.py" <<'EOF'

# netbsd.pf (tools/docs-build.sh): the guides are Markdown, read by myst-parser;
# headings get anchors so that guide-to-guide links work.
extensions.append('myst_parser')
myst_heading_anchors = 3

# The build is offline, so no intersphinx inventory: the few labels of the
# Ansible documentation that module pages refer to link to it directly.
intersphinx_mapping = {}
ANSIBLE_DOCS = 'https://docs.ansible.com/projects/ansible/devel/'
ANSIBLE_DOCS_LABELS = {
    'action_plugins': 'plugins/action.html',
    'ansible_configuration_settings': 'reference_appendices/config.html',
    'common_return_values': 'reference_appendices/common_return_values.html',
}


def link_ansible_docs_label(app, env, node, contnode):
    from docutils import nodes
    page = ANSIBLE_DOCS_LABELS.get(node.get('reftarget')) if node.get('reftype') == 'ref' else None
    if page is None:
        return None
    reference = nodes.reference('', '', internal=False, refuri=ANSIBLE_DOCS + page)
    reference += contnode
    return reference


def setup(app):
    app.connect('missing-reference', link_ansible_docs_label)
EOF

mkdir -m 700 "$sphinx_dir/rst/collections" 2>/dev/null || chmod 700 "$sphinx_dir/rst"
antsibull-docs --config-file "$sphinx_dir/antsibull-docs.cfg" collection \
    --cleanup everything --use-current --dest-dir "$sphinx_dir/rst" netbsd.pf

# --- the guides in place of their RST pages --------------------------------------------
docsite=$sphinx_dir/rst/collections/netbsd/pf/docsite
for guide in "$root"/docs/*.md; do
    name=$(basename "$guide" .md)
    rm "$docsite/$name.rst"
    { printf '(%s.%s)=\n\n' "$docsite_prefix" "${name//-/_}"; cat "$guide"; } > "$docsite/$name.md"
done

# --- HTML -------------------------------------------------------------------------------
sphinx-build -b html -c "$sphinx_dir" -W --keep-going -q "$sphinx_dir/rst" "$site"
echo "docs site: $site/index.html"
