// Small DOM helpers: finding the page's fixed elements by id (failing
// loudly if the HTML and the script disagree) and making new elements
// with text content only (never HTML from the network).

/** The element with `id`, of type `type`; throws if the page has no such element. */
export function byId<T extends HTMLElement>(id: string, type: new () => T): T {
  const found = document.getElementById(id);
  if (!(found instanceof type)) throw new Error(`the page has no <${type.name}> #${id}`);
  return found;
}

/** Attributes and properties of a new element. */
export interface Props {
  /** The `class` attribute. */
  className?: string;
  /** The element's text (set as text, never parsed as HTML). */
  text?: string;
  /** Other attributes, by name. */
  attrs?: Record<string, string>;
}

/** A new `<tag>` with `props` and `children` appended in order. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className !== undefined) node.className = props.className;
  if (props.text !== undefined) node.textContent = props.text;
  for (const [name, value] of Object.entries(props.attrs ?? {})) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** Removes every child of `node`. */
export function clear(node: Node): void {
  while (node.firstChild !== null) node.removeChild(node.firstChild);
}
