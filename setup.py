"Packaging from settings.ini (read with configparser; no pkg_resources)."
from configparser import ConfigParser
from pathlib import Path
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read(Path(__file__).parent/'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']
split = lambda key: cfg.get(key, '').split()
readme = Path(__file__).parent/'README.md'

setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else '',
    long_description_content_type='text/markdown',
    author=cfg['author'], author_email=cfg['author_email'], license='Apache-2.0',
    url=cfg['git_url'], project_urls={'Source': cfg['git_url']}, keywords=cfg['keywords'].split(),
    classifiers=['Programming Language :: Python :: 3',
                 'Intended Audience :: Education', 'Topic :: Scientific/Engineering :: Artificial Intelligence'],
    python_requires='>=' + cfg['min_python'],
    packages=setuptools.find_packages(include=[cfg['lib_path'], cfg['lib_path'] + '.*']),
    include_package_data=True,
    install_requires=split('requirements'),
    extras_require={'dev': split('dev_requirements'), 'inception': ['torchvision']},
    entry_points={'console_scripts': split('console_scripts'),
                  'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False)
