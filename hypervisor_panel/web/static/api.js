// The JSON API client used by every page: session cookie + X-CSRF-Token, errors as ApiError.

const csrfMeta = document.querySelector('meta[name="csrf-token"]');
export const csrfToken = csrfMeta ? csrfMeta.content : '';
export const API = '/api/v1';
export const FINAL_STATES = ['succeeded', 'failed', 'cancelled'];

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = Array.isArray(details) ? details : [];
  }
}

/** Call the API; resolve with the parsed body (null for 204), reject with ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (!['GET', 'HEAD', 'OPTIONS'].includes(method)) headers['X-CSRF-Token'] = csrfToken;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(API + path, init);
  } catch (err) {
    throw new ApiError(0, 'network_error', `the panel did not answer (${err.message})`);
  }
  if (resp.status === 204) return null;
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const error = (data && data.error) || {};
    if (resp.status === 401 && error.code !== 'invalid_credentials') {
      // The session ended (expired or logged out elsewhere): back to the sign-in page.
      window.location.assign('/login');
    }
    throw new ApiError(resp.status, error.code || `http_${resp.status}`,
      error.message || resp.statusText || 'request failed', error.details);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
export const del = (path) => api('DELETE', path);
export const items = async (path) => (await get(path)).items;

/** Poll a task until it ends; ``onUpdate(task)`` sees every state. Resolves with the task. */
export async function pollTask(taskId, onUpdate) {
  let delay = 250;
  for (;;) {
    const task = await get(`/tasks/${encodeURIComponent(taskId)}`);
    if (onUpdate) onUpdate(task);
    if (FINAL_STATES.includes(task.state)) return task;
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 1.5, 2000);
  }
}
