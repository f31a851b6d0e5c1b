#!/usr/bin/env python
"""Remove ipywidgets state from an executed notebook (run after nbdev_clean): the 'widgets' notebook metadata (it holds
every PNG the explorer ever showed, base64) and the widget-view outputs, which cannot render without that state;
a text note replaces them. Usage: strip_widgets.py NB.ipynb"""
import json, sys
from pathlib import Path
NOTE = '(the live explorer is drawn here when the notebook runs: JupyterLab, or `voila nbs/11_explorer.ipynb`)'
p = Path(sys.argv[1])
nb = json.loads(p.read_text(encoding='utf-8'))
nb['metadata'].pop('widgets', None)
n = 0
for c in nb['cells']:
    for o in c.get('outputs', []):
        d = o.get('data', {})
        if 'application/vnd.jupyter.widget-view+json' in d:
            o['data'] = {'text/plain': [NOTE]}; n += 1
p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
print(f'{p}: {n} widget outputs replaced, {p.stat().st_size / 1e3:.0f} kB')
