// The Sluice operator page, catalog view: sources and destinations with forms to create, change
// and delete them. A destination's config fields are built from what its plugin declares
// (`GET /api/v1/catalog/plugins`); a plugin that declares none gets its config as JSON.
//
// Loaded before app.js and only defines functions: app.js's helpers (`api`, `el`, `$`, `state`)
// exist by the time any of them runs. The same safety rules hold: API text reaches the page
// through `textContent` and attributes of elements made here, never as markup. The host is the
// judge of every value: the form sends what was typed, and a refusal (`{"error", "field"}`) is
// shown beside the field it names, or above the buttons when the form has no such field.
'use strict';

const MASK = '***';

const cat = {
  data: null, // GET /api/v1/catalog
  plugins: [], // GET /api/v1/catalog/plugins
  source: null, // the source being edited (null: a new one)
  destination: null, // the destination being edited (null: a new one)
};

const itemKey = (x) => `${x.workspace}/${x.id}`;
const catalogPath = (kind, x) => `/api/v1/catalog/${kind}/${seg(x.workspace)}/${seg(x.id)}`;

// ---- The view ------------------------------------------------------------------------------

function showView(name) {
  document.querySelector('main').dataset.view = name;
  for (const v of ['lanes', 'catalog']) {
    $(`view-${v}`).setAttribute('aria-pressed', String(v === name));
  }
  if (name === 'catalog') loadCatalog().catch(reportError);
}

async function loadCatalog() {
  const [data, plugins] = await Promise.all([
    api('GET', '/api/v1/catalog'),
    api('GET', '/api/v1/catalog/plugins'),
  ]);
  cat.data = data;
  cat.plugins = plugins.plugins || [];
  renderCatalog();
}

function renderCatalog() {
  const d = cat.data;
  const sources = d.sources.map((s) => el('tr', { 'data-source': itemKey(s) },
    td(s.workspace),
    el('td', {}, el('button', {
      type: 'button', class: 'link', 'data-source': itemKey(s), onclick: () => editSource(s),
    }, s.id)),
    td(s.enabled ? 'yes' : 'no', s.enabled ? null : 'warn'),
    td(s.destinations.join(', ') || '—'),
    td(s.keys.map((k) => k.hint + (k.expires_at ? ` (until ${fmtTime(k.expires_at)})` : ''))
      .join(', ') || '—')));
  $('sources').tBodies[0].replaceChildren(...sources);
  show('sources-empty', sources.length === 0);
  const destinations = d.destinations.map((x) => el('tr', { 'data-destination': itemKey(x) },
    td(x.workspace),
    el('td', {}, el('button', {
      type: 'button', class: 'link', 'data-destination': itemKey(x),
      onclick: () => editDestination(x),
    }, x.id)),
    td(x.plugin),
    td(x.sources.join(', ') || '—'),
    el('td', { class: 'truncate' }, el('code', {}, JSON.stringify(x.config)))));
  $('destinations').tBodies[0].replaceChildren(...destinations);
  show('destinations-empty', destinations.length === 0);
  $('workspaces').replaceChildren(...d.workspaces.map((w) => el('option', { value: w })));
  updateCatalogForms();
}

/** Read tokens may look at a form but not change anything; the host answers 403 anyway. */
function updateCatalogForms() {
  const readOnly = state.readOnly === true;
  for (const b of ['source-new', 'destination-new']) {
    $(b).disabled = readOnly;
    $(b).title = readOnly ? READ_ONLY : '';
  }
  for (const form of [$('source-form'), $('destination-form')]) {
    for (const input of form.querySelectorAll('input, select, textarea, button[data-mutates]')) {
      // Links of an existing destination change in the source's form (see editDestination).
      const fixed = input.dataset.fixed === 'true';
      input.disabled = readOnly || fixed;
      if (input.matches('button')) input.title = readOnly ? READ_ONLY : '';
    }
  }
}

// ---- Errors --------------------------------------------------------------------------------

function clearErrors(form) {
  for (const e of form.querySelectorAll('.field-error, .form-error')) e.textContent = '';
  for (const f of form.querySelectorAll('.field.invalid')) f.classList.remove('invalid');
}

/**
 * Shows `message` beside the field named `field` (`config.url`), or beside the nearest field
 * above it (`config.headers.X-Id` → `config.headers`); with none, above the form's buttons.
 */
function showError(form, field, message) {
  let path = field || '';
  while (path) {
    const box = [...form.querySelectorAll('.field')].find((f) => f.dataset.field === path);
    if (box) {
      box.classList.add('invalid');
      box.querySelector('.field-error').textContent = message;
      const input = box.querySelector('input, select, textarea');
      if (input) input.focus();
      return;
    }
    const cut = Math.max(path.lastIndexOf('.'), path.lastIndexOf('['));
    path = cut > 0 ? path.slice(0, cut) : '';
  }
  form.querySelector('.form-error').textContent = field ? `${field}: ${message}` : message;
}

/** An API refusal: its `field` names where it goes; the text repeats it as a prefix. */
function showApiError(form, e) {
  const field = e.field || '';
  const prefix = `${field}: `;
  const message = field && e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message;
  showError(form, field, message);
}

/** Collects client-side problems; the form is sent only when there are none. */
class Problems {
  constructor(form) {
    this.form = form;
    this.any = false;
  }
  add(field, message) {
    this.any = true;
    showError(this.form, field, message);
  }
}

// ---- Sources -------------------------------------------------------------------------------

function choices(boxId, name, items, checked, fixed) {
  $(boxId).replaceChildren(...items.map((id) => el('label', { class: 'choice' },
    el('input', {
      type: 'checkbox', name, value: id, checked: checked.includes(id),
      'data-fixed': fixed ? 'true' : null,
    }), ` ${id}`)));
  if (items.length === 0) $(boxId).append(el('span', { class: 'muted' }, 'none in this workspace'));
}

const checkedValues = (form, name) =>
  [...form.querySelectorAll(`input[name="${name}"]`)].filter((i) => i.checked).map((i) => i.value);

function sourceChoices(checked) {
  const ws = $('source-workspace').value.trim();
  const ids = cat.data.destinations.filter((x) => x.workspace === ws).map((x) => x.id);
  choices('source-destinations', 'destinations', ids, checked, false);
}

function editSource(s) {
  cat.source = s || null;
  const form = $('source-form');
  clearErrors(form);
  $('source-form-title').textContent = s ? `Source ${itemKey(s)}` : 'New source';
  $('source-workspace').value = s ? s.workspace : '';
  $('source-id').value = s ? s.id : '';
  $('source-enabled').checked = s ? s.enabled : true;
  // Ids never change: an existing source's are shown, not edited.
  for (const id of ['source-workspace', 'source-id']) $(id).readOnly = Boolean(s);
  sourceChoices(s ? s.destinations : []);
  show('source-delete', Boolean(s));
  show('source-form', true);
  updateCatalogForms();
  $(s ? 'source-enabled' : 'source-workspace').focus();
}

async function saveSource() {
  const form = $('source-form');
  clearErrors(form);
  const s = cat.source;
  const body = {
    enabled: $('source-enabled').checked,
    destinations: checkedValues(form, 'destinations'),
  };
  const out = $('catalog-result');
  out.classList.remove('error');
  try {
    if (s) {
      await api('PUT', catalogPath('sources', s), body);
      out.textContent = `Saved source ${itemKey(s)}.`;
    } else {
      body.workspace = $('source-workspace').value.trim();
      body.id = $('source-id').value.trim();
      const r = await api('POST', '/api/v1/catalog/sources', body);
      // The key is shown this once: the host keeps only its hash.
      out.replaceChildren(`Created source ${body.workspace}/${body.id}. Its write key (shown once): `,
        el('code', { id: 'source-write-key' }, r.write_key || ''));
    }
  } catch (e) {
    showApiError(form, e);
    return;
  }
  show('source-form', false);
  await loadCatalog();
}

async function deleteSource() {
  const s = cat.source;
  if (!s || !window.confirm(`Delete source ${itemKey(s)}? Its write keys stop working at once.`)) {
    return;
  }
  try {
    await api('DELETE', catalogPath('sources', s));
  } catch (e) {
    showApiError($('source-form'), e);
    return;
  }
  $('catalog-result').textContent = `Deleted source ${itemKey(s)}.`;
  show('source-form', false);
  await loadCatalog();
}
