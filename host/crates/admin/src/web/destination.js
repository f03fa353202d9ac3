// The Sluice operator page, catalog view: the destination form. Its config fields are built
// from the fields the chosen plugin declares (type, label, description, default, secret); a
// plugin that declares none gets its config as a JSON text area. Loaded after catalog.js,
// before app.js; the same rules hold (text only through `textContent`, the host judges).
'use strict';

const FILTER_KINDS = ['allow_types', 'deny_types', 'allow_events', 'deny_events'];
/** The retry settings and their inputs. */
const RETRY_INPUTS = {
  min_backoff: 'destination-retry-min',
  max_backoff: 'destination-retry-max',
  max_attempts: 'destination-retry-attempts',
  window: 'destination-retry-window',
};

/** The value at a config path (`auth.token`), or undefined. */
function getPath(obj, path) {
  return path.split('.').reduce((o, k) => (o && typeof o === 'object' ? o[k] : undefined), obj);
}

/** Sets (or, with undefined, removes) the value at a config path, making objects on the way. */
function setPath(obj, path, value) {
  const keys = path.split('.');
  const last = keys.pop();
  let o = obj;
  for (const k of keys) {
    if (!o[k] || typeof o[k] !== 'object' || Array.isArray(o[k])) {
      if (value === undefined) return;
      o[k] = {};
    }
    o = o[k];
  }
  if (value === undefined) delete o[last];
  else o[last] = value;
}

const pluginNamed = (name) => cat.plugins.find((p) => p.name === name);

/** One declared field's input, filled with `value` (from the stored, masked config). */
function fieldInput(f, value) {
  const props = { id: `destination-config-${f.name}`, name: `config.${f.name}` };
  const hint = f.default === null || f.default === undefined ? '' : JSON.stringify(f.default);
  switch (f.type) {
    case 'boolean':
      return el('input', {
        ...props, type: 'checkbox', checked: value === undefined ? f.default === true : value === true,
      });
    case 'enum': {
      const select = el('select', props,
        el('option', { value: '' }, hint ? `— (default ${f.default})` : '—'),
        ...f.options.map((o) => el('option', { value: o }, o)));
      select.value = typeof value === 'string' ? value : '';
      return select;
    }
    case 'string_map': {
      const text = typeof value === 'string' ? value // a whole map masked: `***`
        : value && typeof value === 'object'
          ? Object.entries(value).map(([k, v]) => `${k}: ${v}`).join('\n') : '';
      const area = el('textarea', { ...props, rows: 3, placeholder: 'Name: value, one a line' });
      area.value = text;
      return area;
    }
    default: {
      const input = el('input', {
        ...props,
        // A secret is never shown: an existing one reads `***`, which the host keeps as stored.
        type: f.secret ? 'password' : 'text',
        autocomplete: f.secret ? 'new-password' : 'off',
        inputmode: f.type === 'integer' ? 'numeric' : f.type === 'url' ? 'url' : null,
        placeholder: hint ? `default ${hint}` : f.type === 'url' ? 'https://…' : null,
        required: f.required,
      });
      input.value = value === undefined || value === null ? '' : String(value);
      return input;
    }
  }
}

/** Builds the config part of the form for the plugin named `name`, filled from `config`. */
function renderConfig(name, config) {
  const box = $('destination-config');
  const parts = [el('legend', {}, 'config')];
  const plugin = pluginNamed(name);
  if (!name) {
    parts.push(el('p', { class: 'muted' }, 'Choose a plugin.'));
  } else if (!plugin || !plugin.fields) {
    // No declared fields (or the plugin is not loaded on this host): the config as JSON,
    // checked by the plugin on save.
    const area = el('textarea', { id: 'destination-config-json', name: 'config', rows: 6 });
    area.value = JSON.stringify(config || {}, null, 2);
    parts.push(el('div', { class: 'field', 'data-field': 'config' },
      el('label', { for: 'destination-config-json' }, 'config (JSON)'), area,
      el('span', { class: 'field-error', role: 'alert' })));
  } else if (plugin.fields.length === 0) {
    parts.push(el('p', { class: 'muted' }, `${plugin.name} takes no config.`));
  } else {
    for (const f of plugin.fields) {
      parts.push(el('div', { class: 'field', 'data-field': `config.${f.name}` },
        el('label', { for: `destination-config-${f.name}` }, f.label, f.required ? ' *' : ''),
        fieldInput(f, getPath(config || {}, f.name)),
        el('span', { class: 'field-error', role: 'alert' }),
        f.description ? el('small', { class: 'muted description' }, f.description) : null));
    }
  }
  box.replaceChildren(...parts);
  updateCatalogForms();
}

/** The config the form describes; problems are shown beside their fields. */
function readConfig(form, plugin, base, problems) {
  if (!plugin || !plugin.fields) {
    const area = form.elements.namedItem('config');
    try {
      return JSON.parse(area ? area.value || '{}' : '{}');
    } catch (e) {
      problems.add('config', `not JSON: ${e.message}`);
      return undefined;
    }
  }
  // Keys the plugin does not declare are kept as stored: the form only changes what it shows.
  const config = structuredClone(base || {});
  for (const f of plugin.fields) {
    const input = form.elements.namedItem(`config.${f.name}`);
    const field = `config.${f.name}`;
    let value;
    if (f.type === 'boolean') {
      value = input.checked;
    } else if (f.type === 'string_map') {
      value = readMap(input.value, field, problems);
    } else {
      const text = f.type === 'string' && f.secret ? input.value : input.value.trim();
      if (text === '') value = undefined;
      else if (f.type !== 'integer') value = text;
      else if (/^-?\d+$/.test(text)) value = Number(text);
      else problems.add(field, 'must be a whole number');
    }
    if (value === undefined && f.required) problems.add(field, 'required');
    setPath(config, f.name, value);
  }
  return config;
}

/** `Name: value` lines as an object; `***` alone keeps a wholly secret map as stored. */
function readMap(text, field, problems) {
  if (text.trim() === '') return undefined;
  if (text.trim() === MASK) return MASK;
  const map = {};
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const at = line.indexOf(':');
    if (at <= 0) {
      problems.add(field, `\`${line.trim()}\`: write each entry as Name: value`);
      return undefined;
    }
    map[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return map;
}

function destinationSources(checked, fixed) {
  const ws = $('destination-workspace').value.trim();
  const ids = cat.data.sources.filter((s) => s.workspace === ws).map((s) => s.id);
  choices('destination-sources', 'sources', ids, checked, fixed);
}

function editDestination(x) {
  cat.destination = x || null;
  const form = $('destination-form');
  clearErrors(form);
  $('destination-form-title').textContent = x ? `Destination ${itemKey(x)}` : 'New destination';
  $('destination-workspace').value = x ? x.workspace : '';
  $('destination-id').value = x ? x.id : '';
  for (const id of ['destination-workspace', 'destination-id']) $(id).readOnly = Boolean(x);
  const select = $('destination-plugin');
  const names = cat.plugins.map((p) => p.name);
  if (x && !names.includes(x.plugin)) names.push(x.plugin); // not loaded here: kept as is
  select.replaceChildren(el('option', { value: '' }, '— choose —'),
    ...names.map((n) => el('option', { value: n }, n)));
  select.value = x ? x.plugin : '';
  renderConfig(x ? x.plugin : '', x ? x.config : {});
  // Creating links sources in the same write; afterwards links change in the source's form.
  destinationSources(x ? x.sources : [], Boolean(x));
  $('destination-start').value = 'now';
  show('destination-start-at', false);
  $('destination-start').closest('.field').hidden = Boolean(x);
  const filter = (x && x.filter) || {};
  const kinds = FILTER_KINDS.filter((k) => (filter[k] || []).length > 0);
  $('destination-filter-kind').value = kinds[0] || '';
  $('destination-filter').value = kinds[0] ? filter[kinds[0]].join(', ') : '';
  const retry = (x && x.retry) || {};
  for (const [key, id] of Object.entries(RETRY_INPUTS)) {
    $(id).value = retry[key] === null || retry[key] === undefined ? '' : String(retry[key]);
  }
  show('destination-delete', Boolean(x));
  show('destination-form', true);
  updateCatalogForms();
  $(x ? 'destination-plugin' : 'destination-workspace').focus();
}

function readFilter(problems) {
  const kind = $('destination-filter-kind').value;
  const names = $('destination-filter').value.split(',').map((n) => n.trim()).filter(Boolean);
  if (!kind) return {};
  if (names.length === 0) problems.add('filter', 'name at least one type or event');
  // A filter with several lists (set with the API or CLI) keeps its other lists.
  const filter = { ...((cat.destination && cat.destination.filter) || {}) };
  for (const k of FILTER_KINDS) if (k !== kind && k.endsWith(kind.split('_')[1])) delete filter[k];
  filter[kind] = names;
  return filter;
}

function readRetry(problems) {
  const retry = {};
  for (const [key, id] of Object.entries(RETRY_INPUTS)) {
    const v = $(id).value.trim();
    if (v === '') continue;
    if (key !== 'max_attempts') retry[key] = v;
    else if (/^\d+$/.test(v)) retry[key] = Number(v);
    else problems.add('retry', 'max_attempts: a whole number');
  }
  return retry;
}

async function saveDestination() {
  const form = $('destination-form');
  clearErrors(form);
  const problems = new Problems(form);
  const x = cat.destination;
  const plugin = $('destination-plugin').value;
  if (!plugin) problems.add('plugin', 'choose a plugin');
  const config = readConfig(form, pluginNamed(plugin), x && x.plugin === plugin ? x.config : {},
    problems);
  const filter = readFilter(problems);
  const retry = readRetry(problems);
  if (problems.any) return;
  const out = $('catalog-result');
  out.classList.remove('error');
  try {
    if (x) {
      // A PUT replaces every setting: send the ones this form does not show as they are.
      const body = {
        plugin, config, retry, filter, ordering: x.ordering, max_concurrency: x.max_concurrency,
        rate_limit: x.rate_limit, allowed_private_networks: x.allowed_private_networks,
      };
      await api('PUT', catalogPath('destinations', x), body);
      out.textContent = `Saved destination ${itemKey(x)}.`;
    } else {
      const startKind = $('destination-start').value;
      const body = {
        workspace: $('destination-workspace').value.trim(),
        id: $('destination-id').value.trim(),
        plugin, config, retry, filter,
        sources: checkedValues(form, 'sources'),
        start: startKind === 'time' ? $('destination-start-at').value.trim() : startKind,
      };
      await api('POST', '/api/v1/catalog/destinations', body);
      out.textContent = `Created destination ${body.workspace}/${body.id}.`;
    }
  } catch (e) {
    showApiError(form, e);
    return;
  }
  show('destination-form', false);
  await loadCatalog();
}

async function deleteDestination() {
  const x = cat.destination;
  const question = `Delete destination ${x && itemKey(x)}? Its unfinished jobs are aborted.`;
  if (!x || !window.confirm(question)) return;
  try {
    await api('DELETE', catalogPath('destinations', x));
  } catch (e) {
    showApiError($('destination-form'), e);
    return;
  }
  $('catalog-result').textContent = `Deleted destination ${itemKey(x)}.`;
  show('destination-form', false);
  await loadCatalog();
}

function wireCatalog() {
  $('view-lanes').addEventListener('click', () => showView('lanes'));
  $('view-catalog').addEventListener('click', () => showView('catalog'));
  $('catalog-reload').addEventListener('click', () => loadCatalog().catch(reportError));
  $('source-new').addEventListener('click', () => editSource(null));
  $('source-cancel').addEventListener('click', () => show('source-form', false));
  $('source-delete').addEventListener('click', () => deleteSource().catch(reportError));
  $('source-workspace').addEventListener('input',
    () => sourceChoices(checkedValues($('source-form'), 'destinations')));
  $('source-form').addEventListener('submit', (e) => {
    e.preventDefault();
    saveSource().catch(reportError);
  });
  $('destination-new').addEventListener('click', () => editDestination(null));
  $('destination-cancel').addEventListener('click', () => show('destination-form', false));
  $('destination-delete').addEventListener('click', () => deleteDestination().catch(reportError));
  $('destination-workspace').addEventListener('input',
    () => destinationSources(checkedValues($('destination-form'), 'sources'), false));
  $('destination-plugin').addEventListener('change', () => {
    const x = cat.destination;
    const name = $('destination-plugin').value;
    renderConfig(name, x && x.plugin === name ? x.config : {});
  });
  $('destination-start').addEventListener('change',
    () => show('destination-start-at', $('destination-start').value === 'time'));
  $('destination-form').addEventListener('submit', (e) => {
    e.preventDefault();
    saveDestination().catch(reportError);
  });
}
